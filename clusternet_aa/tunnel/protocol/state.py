"""The stream lifecycle as a transition table.

A stream is opened by one side (the *opener*, which sends OPEN) and answered by the other (the
*responder*, which sends HEADERS before any DATA of its own). Either half ends with END; either
side may RESET at any time. The table is the single source of truth: an input that has no entry
for the current state is a protocol error, raised with a code.

    IDLE --send/recv OPEN--> OPEN --send END--> HALF_CLOSED_LOCAL --recv END--> CLOSED
                               \\--recv END--> HALF_CLOSED_REMOTE --send END--> CLOSED
    any state --send/recv RESET--> CLOSED

Whether the responder has sent its head yet is tracked by the ``*_AWAITING_HEAD`` twins of the
open states, so "DATA before HEADERS" is also just a missing table entry.
"""

from __future__ import annotations

import enum

from clusternet_aa.tunnel.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)


class StreamState(enum.Enum):
    IDLE = "idle"
    #: Open both ways; the responder's HEADERS has not been seen yet.
    OPEN_AWAITING_HEAD = "open, awaiting head"
    OPEN = "open"
    #: We sent END (we are the opener, so the head may still be pending).
    HALF_CLOSED_LOCAL_AWAITING_HEAD = "half-closed (local), awaiting head"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    #: The peer sent END.
    HALF_CLOSED_REMOTE_AWAITING_HEAD = "half-closed (remote), awaiting head"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"

    # Members are singletons compared by identity; hashing them by identity too keeps the
    # transition-table lookup (several per frame) in C instead of Enum's Python __hash__.
    __hash__ = object.__hash__


class StreamInput(enum.Enum):
    SEND_OPEN = "send OPEN"
    RECV_OPEN = "receive OPEN"
    SEND_HEADERS = "send HEADERS"
    RECV_HEADERS = "receive HEADERS"
    SEND_DATA = "send DATA"
    RECV_DATA = "receive DATA"
    SEND_END = "send END"
    RECV_END = "receive END"
    SEND_RESET = "send RESET"
    RECV_RESET = "receive RESET"

    # Members are singletons compared by identity; hashing them by identity too keeps the
    # transition-table lookup (several per frame) in C instead of Enum's Python __hash__.
    __hash__ = object.__hash__


S = StreamState
I = StreamInput  # noqa: E741 - a one-letter alias keeps the table readable

#: Which inputs each side may use while the head is pending. ``opener`` says which side we are:
#: only the responder sends HEADERS; only the opener may send DATA before the head.
_OPENER = True
_RESPONDER = False

#: (is_opener, state, input) -> next state.
TRANSITIONS: dict[tuple[bool, StreamState, StreamInput], StreamState] = {}


def _add(roles: tuple[bool, ...], state: StreamState, inp: StreamInput, nxt: StreamState) -> None:
    for role in roles:
        TRANSITIONS[(role, state, inp)] = nxt


_BOTH = (_OPENER, _RESPONDER)

# Opening.
_add((_OPENER,), S.IDLE, I.SEND_OPEN, S.OPEN_AWAITING_HEAD)
_add((_RESPONDER,), S.IDLE, I.RECV_OPEN, S.OPEN_AWAITING_HEAD)

# The response head: sent by the responder, received by the opener, exactly once.
for _before, _after in (
    (S.OPEN_AWAITING_HEAD, S.OPEN),
    (S.HALF_CLOSED_REMOTE_AWAITING_HEAD, S.HALF_CLOSED_REMOTE),
):
    _add((_RESPONDER,), _before, I.SEND_HEADERS, _after)
for _before, _after in (
    (S.OPEN_AWAITING_HEAD, S.OPEN),
    (S.HALF_CLOSED_LOCAL_AWAITING_HEAD, S.HALF_CLOSED_LOCAL),
):
    _add((_OPENER,), _before, I.RECV_HEADERS, _after)

# DATA: the opener may stream a request body before the head; the responder may not.
_add((_OPENER,), S.OPEN_AWAITING_HEAD, I.SEND_DATA, S.OPEN_AWAITING_HEAD)
_add(
    (_OPENER,), S.HALF_CLOSED_REMOTE_AWAITING_HEAD, I.SEND_DATA, S.HALF_CLOSED_REMOTE_AWAITING_HEAD
)
_add((_RESPONDER,), S.OPEN_AWAITING_HEAD, I.RECV_DATA, S.OPEN_AWAITING_HEAD)
_add(
    (_RESPONDER,), S.HALF_CLOSED_LOCAL_AWAITING_HEAD, I.RECV_DATA, S.HALF_CLOSED_LOCAL_AWAITING_HEAD
)
_add(_BOTH, S.OPEN, I.SEND_DATA, S.OPEN)
_add(_BOTH, S.OPEN, I.RECV_DATA, S.OPEN)
_add(_BOTH, S.HALF_CLOSED_REMOTE, I.SEND_DATA, S.HALF_CLOSED_REMOTE)
_add(_BOTH, S.HALF_CLOSED_LOCAL, I.RECV_DATA, S.HALF_CLOSED_LOCAL)

# Half-closes. The responder must send its head before ending its half.
_add((_OPENER,), S.OPEN_AWAITING_HEAD, I.SEND_END, S.HALF_CLOSED_LOCAL_AWAITING_HEAD)
_add((_RESPONDER,), S.OPEN_AWAITING_HEAD, I.RECV_END, S.HALF_CLOSED_REMOTE_AWAITING_HEAD)
_add(_BOTH, S.OPEN, I.SEND_END, S.HALF_CLOSED_LOCAL)
_add(_BOTH, S.OPEN, I.RECV_END, S.HALF_CLOSED_REMOTE)
_add(_BOTH, S.HALF_CLOSED_REMOTE, I.SEND_END, S.CLOSED)
_add(_BOTH, S.HALF_CLOSED_LOCAL, I.RECV_END, S.CLOSED)

# Resets end everything from any live state.
for _state in StreamState:
    if _state not in (S.IDLE, S.CLOSED):
        _add(_BOTH, _state, I.SEND_RESET, S.CLOSED)
        _add(_BOTH, _state, I.RECV_RESET, S.CLOSED)


def next_state(
    state: StreamState, event: StreamInput, *, opener: bool, stream_id: int
) -> StreamState:
    """The state after ``event``; raises with a code when the table has no entry.

    A bad *send* is the caller's bug (:class:`LocalProtocolError`, or
    :class:`StreamClosedError` once the stream can no longer send); a bad *receive* is the
    peer's (:class:`RemoteProtocolError` carrying the stream id, so only that stream is reset).
    """
    try:
        return TRANSITIONS[(opener, state, event)]
    except KeyError:
        pass
    message = f"stream {stream_id}: cannot {event.value} in state {state.value}"
    if event.name.startswith("SEND"):
        if state in (S.CLOSED, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_LOCAL_AWAITING_HEAD):
            raise StreamClosedError(message)
        raise LocalProtocolError(message)
    code = ErrorCode.STREAM_CLOSED if state is S.CLOSED else ErrorCode.PROTOCOL_ERROR
    if state in (S.HALF_CLOSED_REMOTE, S.HALF_CLOSED_REMOTE_AWAITING_HEAD):
        code = ErrorCode.STREAM_CLOSED
    raise RemoteProtocolError(message, code, stream_id=stream_id)


Moves = dict[StreamState, StreamState]


def moves(event: StreamInput) -> tuple[Moves, Moves]:
    """The table's entries for one input as ``(responder's, opener's)`` state -> next state, so
    a hot path indexes by ``is_opener`` and looks the state up without building a key tuple.
    A missing entry is an illegal move: :func:`next_state` raises the error it deserves."""
    return (
        {s: n for (role, s, inp), n in TRANSITIONS.items() if inp is event and not role},
        {s: n for (role, s, inp), n in TRANSITIONS.items() if inp is event and role},
    )
