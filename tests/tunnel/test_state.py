"""The stream transition table: every entry, and every missing entry with its error and code."""

from __future__ import annotations

import itertools

import pytest

from clusternet_aa.tunnel.protocol import state
from clusternet_aa.tunnel.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)
from clusternet_aa.tunnel.protocol.state import StreamInput as I
from clusternet_aa.tunnel.protocol.state import StreamState as S

OPENER, RESPONDER = True, False
LIVE = [s for s in S if s not in (S.IDLE, S.CLOSED)]

# The table written out by hand from the lifecycle in the issue, independent of how state.py
# builds it: (is_opener, state, input) -> next state.
EXPECTED: dict[tuple[bool, S, I], S] = {
    (OPENER, S.IDLE, I.SEND_OPEN): S.OPEN_AWAITING_HEAD,
    (RESPONDER, S.IDLE, I.RECV_OPEN): S.OPEN_AWAITING_HEAD,
    # The head, exactly once, from responder to opener.
    (RESPONDER, S.OPEN_AWAITING_HEAD, I.SEND_HEADERS): S.OPEN,
    (RESPONDER, S.HALF_CLOSED_REMOTE_AWAITING_HEAD, I.SEND_HEADERS): S.HALF_CLOSED_REMOTE,
    (OPENER, S.OPEN_AWAITING_HEAD, I.RECV_HEADERS): S.OPEN,
    (OPENER, S.HALF_CLOSED_LOCAL_AWAITING_HEAD, I.RECV_HEADERS): S.HALF_CLOSED_LOCAL,
    # A request body may precede the head.
    (OPENER, S.OPEN_AWAITING_HEAD, I.SEND_DATA): S.OPEN_AWAITING_HEAD,
    (OPENER, S.HALF_CLOSED_REMOTE_AWAITING_HEAD, I.SEND_DATA): S.HALF_CLOSED_REMOTE_AWAITING_HEAD,
    (RESPONDER, S.OPEN_AWAITING_HEAD, I.RECV_DATA): S.OPEN_AWAITING_HEAD,
    (RESPONDER, S.HALF_CLOSED_LOCAL_AWAITING_HEAD, I.RECV_DATA): S.HALF_CLOSED_LOCAL_AWAITING_HEAD,
    # Only the opener can half-close before the head.
    (OPENER, S.OPEN_AWAITING_HEAD, I.SEND_END): S.HALF_CLOSED_LOCAL_AWAITING_HEAD,
    (RESPONDER, S.OPEN_AWAITING_HEAD, I.RECV_END): S.HALF_CLOSED_REMOTE_AWAITING_HEAD,
}
for _role in (OPENER, RESPONDER):
    EXPECTED[(_role, S.OPEN, I.SEND_DATA)] = S.OPEN
    EXPECTED[(_role, S.OPEN, I.RECV_DATA)] = S.OPEN
    EXPECTED[(_role, S.HALF_CLOSED_REMOTE, I.SEND_DATA)] = S.HALF_CLOSED_REMOTE
    EXPECTED[(_role, S.HALF_CLOSED_LOCAL, I.RECV_DATA)] = S.HALF_CLOSED_LOCAL
    EXPECTED[(_role, S.OPEN, I.SEND_END)] = S.HALF_CLOSED_LOCAL
    EXPECTED[(_role, S.OPEN, I.RECV_END)] = S.HALF_CLOSED_REMOTE
    EXPECTED[(_role, S.HALF_CLOSED_REMOTE, I.SEND_END)] = S.CLOSED
    EXPECTED[(_role, S.HALF_CLOSED_LOCAL, I.RECV_END)] = S.CLOSED
    for _state in LIVE:
        EXPECTED[(_role, _state, I.SEND_RESET)] = S.CLOSED
        EXPECTED[(_role, _state, I.RECV_RESET)] = S.CLOSED

ALL_KEYS = list(itertools.product((OPENER, RESPONDER), S, I))
MISSING = [key for key in ALL_KEYS if key not in EXPECTED]


def _id(key: tuple[bool, S, I]) -> str:
    role, st, inp = key
    return f"{'opener' if role else 'responder'}-{st.name}-{inp.name}"


def test_table_matches_the_lifecycle_exactly() -> None:
    assert state.TRANSITIONS == EXPECTED


@pytest.mark.parametrize("key", list(EXPECTED), ids=_id)
def test_every_transition(key: tuple[bool, S, I]) -> None:
    role, st, inp = key
    assert state.next_state(st, inp, opener=role, stream_id=5) is EXPECTED[key]


def _our_half_is_finished(st: S) -> bool:
    return st in (S.CLOSED, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_LOCAL_AWAITING_HEAD)


def _their_half_is_finished(st: S) -> bool:
    return st in (S.CLOSED, S.HALF_CLOSED_REMOTE, S.HALF_CLOSED_REMOTE_AWAITING_HEAD)


@pytest.mark.parametrize("key", [k for k in MISSING if k[2].name.startswith("SEND")], ids=_id)
def test_missing_send_is_a_local_error(key: tuple[bool, S, I]) -> None:
    role, st, inp = key
    with pytest.raises(LocalProtocolError) as info:
        state.next_state(st, inp, opener=role, stream_id=5)
    assert not isinstance(info.value, RemoteProtocolError)
    assert "stream 5" in str(info.value)
    if _our_half_is_finished(st):
        assert isinstance(info.value, StreamClosedError)
        assert info.value.code is ErrorCode.STREAM_CLOSED
    else:
        assert type(info.value) is LocalProtocolError
        assert info.value.code is ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("key", [k for k in MISSING if k[2].name.startswith("RECV")], ids=_id)
def test_missing_receive_is_a_remote_stream_error(key: tuple[bool, S, I]) -> None:
    role, st, inp = key
    with pytest.raises(RemoteProtocolError) as info:
        state.next_state(st, inp, opener=role, stream_id=7)
    assert type(info.value) is RemoteProtocolError
    assert info.value.stream_id == 7  # a stream error: only this stream is reset
    expected = ErrorCode.STREAM_CLOSED if _their_half_is_finished(st) else ErrorCode.PROTOCOL_ERROR
    assert info.value.code is expected


@pytest.mark.parametrize(
    ("role", "st", "inp", "why"),
    [
        (RESPONDER, S.OPEN_AWAITING_HEAD, I.SEND_DATA, "responder DATA before its head"),
        (RESPONDER, S.OPEN_AWAITING_HEAD, I.SEND_END, "responder END before its head"),
        (OPENER, S.OPEN_AWAITING_HEAD, I.SEND_HEADERS, "only the responder sends HEADERS"),
        (RESPONDER, S.OPEN, I.SEND_HEADERS, "HEADERS twice"),
        (OPENER, S.OPEN, I.SEND_OPEN, "OPEN twice"),
    ],
)
def test_illegal_sends_that_are_not_about_a_closed_half(
    role: bool, st: S, inp: I, why: str
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        state.next_state(st, inp, opener=role, stream_id=1)
    assert not isinstance(info.value, StreamClosedError), why


@pytest.mark.parametrize(
    ("role", "st", "inp", "code"),
    [
        (OPENER, S.OPEN_AWAITING_HEAD, I.RECV_DATA, ErrorCode.PROTOCOL_ERROR),
        (OPENER, S.OPEN_AWAITING_HEAD, I.RECV_END, ErrorCode.PROTOCOL_ERROR),
        (OPENER, S.OPEN, I.RECV_HEADERS, ErrorCode.PROTOCOL_ERROR),
        (RESPONDER, S.OPEN, I.RECV_HEADERS, ErrorCode.PROTOCOL_ERROR),
        (OPENER, S.HALF_CLOSED_REMOTE, I.RECV_DATA, ErrorCode.STREAM_CLOSED),
        (RESPONDER, S.HALF_CLOSED_REMOTE_AWAITING_HEAD, I.RECV_END, ErrorCode.STREAM_CLOSED),
        (OPENER, S.CLOSED, I.RECV_DATA, ErrorCode.STREAM_CLOSED),
        (RESPONDER, S.IDLE, I.RECV_DATA, ErrorCode.PROTOCOL_ERROR),
    ],
)
def test_illegal_receives_spot_checks(role: bool, st: S, inp: I, code: ErrorCode) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        state.next_state(st, inp, opener=role, stream_id=3)
    assert info.value.code is code


def _reachable(role: bool) -> set[S]:
    seen, todo = {S.IDLE}, [S.IDLE]
    while todo:
        current = todo.pop()
        for (r, st, _inp), nxt in state.TRANSITIONS.items():
            if r is role and st is current and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("role", [OPENER, RESPONDER], ids=["opener", "responder"])
def test_every_reachable_state_can_reach_closed_without_reset(role: bool) -> None:
    """No live state is a dead end: END/DATA/HEADERS alone always lead to CLOSED."""
    for start in _reachable(role) - {S.IDLE}:
        seen, todo = {start}, [start]
        while todo:
            current = todo.pop()
            for (r, st, inp), nxt in state.TRANSITIONS.items():
                if r is role and st is current and "RESET" not in inp.name and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert S.CLOSED in seen, start


def test_which_states_each_side_can_reach() -> None:
    # The opener never sees the peer's END before the head, the responder never ends before
    # sending it; the table's entries for those twin states are kept for symmetry only.
    assert _reachable(OPENER) == set(S) - {S.HALF_CLOSED_REMOTE_AWAITING_HEAD}
    assert _reachable(RESPONDER) == set(S) - {S.HALF_CLOSED_LOCAL_AWAITING_HEAD}
