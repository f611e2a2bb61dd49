"""The reused msgpack Unpacker decodes every message exactly as a fresh one would: the same
frames, or the same error with the same text, whatever faulty messages came before."""

from __future__ import annotations

from unittest.mock import patch

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.errors import RemoteProtocolError
from clusternet_aa.tunnel.protocol.settings import KiB
from tests.tunnel.helpers import PROFILE, raw
from tests.tunnel.test_bad_input import VALID_MESSAGES, inputs

Outcome = list[frames.Frame] | tuple[type[Exception], str, int, int]


def _outcome(data: bytes, max_frame_size: int) -> Outcome:
    try:
        return codec.decode_message(data, max_frame_size=max_frame_size)
    except RemoteProtocolError as exc:
        return (type(exc), str(exc), exc.code, exc.stream_id)


def _fresh(data: bytes, max_frame_size: int) -> Outcome:
    with patch.object(codec, "_REUSE_LIMIT", -1):  # every message to the reference decoder
        return _outcome(data, max_frame_size)


#: An array that claims more elements than the message has bytes: the reference decoder's
#: length limits (the message size) refuse it before msgpack runs out of bytes.
LONG_CLAIM = b"\x92\x05\x01\x92\x05\xdd\x00\x01\x00\x00\x01"


@PROFILE
@given(st.lists(inputs, min_size=1, max_size=6), st.sampled_from([1 * KiB, 64 * KiB]))
@example([LONG_CLAIM, VALID_MESSAGES[0]], 64 * KiB)
@example([raw([5, 1])[:-1], raw([5, 1])], 64 * KiB)
def test_reused_unpacker_decodes_exactly_as_a_fresh_one(
    messages: list[bytes], max_frame_size: int
) -> None:
    for data in messages:
        assert _outcome(data, max_frame_size) == _fresh(data, max_frame_size)


def test_a_fault_keeps_the_reference_error_text() -> None:
    outcome = _outcome(LONG_CLAIM, 64 * KiB)
    assert outcome == _fresh(LONG_CLAIM, 64 * KiB)
    assert isinstance(outcome, tuple)
    assert "max_array_len" in outcome[1]


def test_small_messages_reuse_an_unpacker_and_faults_drop_it() -> None:
    codec._SPARE_UNPACKERS.clear()
    codec.decode_message(VALID_MESSAGES[1], max_frame_size=64 * KiB)
    (unpacker,) = codec._SPARE_UNPACKERS
    codec.decode_message(VALID_MESSAGES[2], max_frame_size=64 * KiB)
    assert [unpacker] == codec._SPARE_UNPACKERS
    with pytest.raises(RemoteProtocolError):
        codec.decode_message(raw([5, 1])[:-1], max_frame_size=64 * KiB)
    assert not codec._SPARE_UNPACKERS  # left mid-frame: never used again


def test_large_messages_use_an_unpacker_of_their_own() -> None:
    codec._SPARE_UNPACKERS.clear()
    big = codec.encode(frames.ResponseHeaders(1, 200, (("x", "v" * (70 * KiB)),)))
    (frame,) = codec.decode_message(big, max_frame_size=1 * 1024 * KiB)
    assert isinstance(frame, frames.ResponseHeaders)
    assert not codec._SPARE_UNPACKERS


def test_the_reused_unpacker_keeps_msgpack_strict_defaults() -> None:
    for bad in (raw([0, 0, {1: 2}]), b"\x92\xa2\xff\xfe\x00"):
        with pytest.raises(RemoteProtocolError, match="malformed msgpack"):
            codec.decode_message(bad, max_frame_size=64 * KiB)
    (frame,) = codec.decode_message(
        msgpack.packb([2, 1, 200, [], {"k": [1, 2]}]), max_frame_size=64 * KiB
    )
    assert frame == frames.ResponseHeaders(1, 200, (), {"k": [1, 2]})
