"""The shortcuts of the sans-IO core's hot paths equal the general code they stand in for."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusternet_aa.tunnel.protocol import codec, frames, state
from clusternet_aa.tunnel.protocol.state import TRANSITIONS, StreamInput, StreamState

names = st.text(max_size=12)
headers = st.lists(st.tuples(names, names), max_size=6).map(tuple)
metadata = st.dictionaries(
    names, st.integers(-(2**63), 2**64 - 1) | names | st.lists(names, max_size=3), max_size=4
)
stream_ids = st.integers(min_value=1, max_value=2**63 - 1)


@given(stream_ids, names, names, headers, metadata)
def test_encode_open_is_byte_identical(
    stream_id: int, method: str, path: str, hdrs: frames.Headers, meta: dict[str, Any]
) -> None:
    target = frames.HttpRequestHead(method, path, hdrs)
    expected = codec.encode(frames.Open(stream_id, target, meta))
    assert codec.encode_open(stream_id, target, meta) == expected
    assert codec.encode_open(stream_id, target, MappingProxyType(meta)) == expected


@pytest.mark.parametrize("meta", [None, {}, {"a": [1]}])
def test_encode_open_of_a_dial_target_is_byte_identical(meta: dict[str, Any] | None) -> None:
    target = frames.DialTarget("tcp", "10.0.0.1:443")
    expected = codec.encode(frames.Open(3, target, dict(meta or {})))
    assert codec.encode_open(3, target, meta) == expected


@given(stream_ids, st.integers(min_value=100, max_value=999), headers, metadata)
def test_encode_headers_is_byte_identical(
    stream_id: int, status: int, hdrs: frames.Headers, meta: dict[str, Any]
) -> None:
    expected = codec.encode(frames.ResponseHeaders(stream_id, status, hdrs, meta))
    assert codec.encode_headers(stream_id, status, hdrs, meta) == expected
    assert codec.encode_headers(stream_id, status, hdrs, None) == codec.encode(
        frames.ResponseHeaders(stream_id, status, hdrs)
    )


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(1, 2**31 - 1))
def test_encode_window_update_is_byte_identical(stream_id: int, increment: int) -> None:
    expected = codec.encode(frames.WindowUpdate(stream_id, increment))
    assert codec.encode_window_update(stream_id, increment) == expected


def test_decode_wire_lists_the_fields_of_each_frame_in_order() -> None:
    head = frames.HttpRequestHead("GET", "/api", (("a", "1"),))
    message = b"".join(
        codec.encode(f)
        for f in (
            frames.Open(1, head, {"u": "x"}),
            frames.ResponseHeaders(1, 200, (("k", "v"),), {"m": 1}),
            frames.End(1),
            frames.Ping(9),
        )
    ) + codec.encode_data(1, b"xyz")
    assert codec.decode_wire(message, 1024) == [
        [1, 1, head, {"u": "x"}],
        [2, 1, 200, (("k", "v"),), {"m": 1}],
        [5, 1],
        [7, 0, 9],
        [3, 1, b"xyz"],
    ]


def test_moves_are_the_transition_table_split_by_role() -> None:
    rebuilt: dict[tuple[bool, StreamState, StreamInput], StreamState] = {}
    for event in StreamInput:
        responder, opener = state.moves(event)
        rebuilt.update({(False, s, event): n for s, n in responder.items()})
        rebuilt.update({(True, s, event): n for s, n in opener.items()})
    assert rebuilt == TRANSITIONS
