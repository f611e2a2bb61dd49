"""A misbehaving peer: every fault gets the right events and frames, never an exception.

Stream-level faults reset that stream (``StreamReset(remote=False)`` plus a RESET frame) and the
session lives on; session-level faults end it (``ConnectionTerminated(remote=False)`` plus a
GOAWAY with the code). Each test also checks what goes back on the wire.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import example, given

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.protocol.state import StreamState
from tests.tunnel.helpers import (
    DIAL,
    HTTP,
    PROFILE,
    decode,
    drain_frames,
    handshaken,
    hello,
    message,
    of_type,
    raw,
)

KiB = 1024


def live_server(settings: Settings | None = None) -> Connection:
    """A server after HELLO with peer streams 1 (answered) and 3 (awaiting head), and our 2."""
    server = handshaken(Role.SERVER, settings)
    server.receive_message(message(frames.Open(1, HTTP), frames.Open(3, DIAL)))
    server.send_headers(1, 200)
    server.open_stream(DIAL)
    drain_frames(server)
    return server


def assert_session_fault(conn: Connection, out: list[events.Event], code: ErrorCode) -> None:
    """The session ended by our decision, every stream failed with it, GOAWAY(code) queued."""
    assert conn.closed
    assert out[-1].__class__ is events.ConnectionTerminated
    assert out[-1] == events.ConnectionTerminated(code, out[-1].reason, remote=False)
    for event in of_type(out, events.StreamReset):
        assert (event.code, event.remote) == (code, False)
    sent = drain_frames(conn)
    goaway = of_type(sent, frames.GoAway)
    assert len(goaway) == 1
    assert goaway[0].code == code
    assert sent[-1] is goaway[0]
    # Once terminated, input is ignored.
    assert conn.receive_message(message(frames.Ping(1))) == []
    assert conn.receive_message(b"\xc1") == []
    assert conn.data_to_send() == b""


def assert_stream_fault(
    conn: Connection, out: list[events.Event], stream_id: int, code: ErrorCode
) -> None:
    """Only ``stream_id`` failed (StreamReset remote=False), RESET(code) queued, session lives."""
    assert not conn.closed
    assert out == [events.StreamReset(stream_id, code, out[0].reason, remote=False)]  # type: ignore[union-attr]
    assert conn.stream_state(stream_id) is StreamState.CLOSED
    resets = of_type(drain_frames(conn), frames.Reset)
    assert [(r.stream_id, r.code) for r in resets] == [(stream_id, code)]
    assert len(resets[0].reason) <= 200


def assert_stream_refused_quietly(conn: Connection, out: list[events.Event], frame: Any) -> None:
    """A frame for a stream we do not know: no event, a RESET back, the session lives."""
    assert out == []
    assert not conn.closed
    assert of_type(drain_frames(conn), frames.Reset) == [frame]


# ------------------------------------------------------------------ session-level faults

SESSION_FAULTS: dict[str, tuple[bytes, ErrorCode]] = {
    "malformed msgpack": (b"\xc1\x00", ErrorCode.PROTOCOL_ERROR),
    "empty message": (b"", ErrorCode.PROTOCOL_ERROR),
    "truncated frame": (message(frames.Data(1, b"abc"))[:-1], ErrorCode.PROTOCOL_ERROR),
    "unknown frame type": (raw([77, 1, b"x"]), ErrorCode.PROTOCOL_ERROR),
    "wrong arity": (raw([3, 1, b"x", b"y"]), ErrorCode.PROTOCOL_ERROR),
    "wrong type": (raw([3, 1, "text not bytes"]), ErrorCode.PROTOCOL_ERROR),
    "not an array": (raw("hello"), ErrorCode.PROTOCOL_ERROR),
    "DATA larger than max_frame_size": (
        codec.encode_data(1, bytes(64 * KiB + 1)),
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "control frame too large": (
        message(frames.Reset(1, 0, "r" * (64 * KiB + 100))),
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "message larger than max_message_size": (
        codec.encode_data(1, bytes(60 * KiB)) * 18,
        ErrorCode.FRAME_SIZE_ERROR,
    ),
    "OPEN with our parity": (message(frames.Open(4, HTTP)), ErrorCode.PROTOCOL_ERROR),
    "OPEN reusing a live id": (message(frames.Open(3, HTTP)), ErrorCode.PROTOCOL_ERROR),
    "OPEN with a lower id": (
        message(frames.Open(5, HTTP), frames.Open(1, HTTP)),
        ErrorCode.PROTOCOL_ERROR,
    ),
    "duplicate HELLO": (message(hello()), ErrorCode.PROTOCOL_ERROR),
    "session window overflow": (
        message(frames.WindowUpdate(0, 2**31 - 1)),
        ErrorCode.FLOW_CONTROL_ERROR,
    ),
}


@pytest.mark.parametrize(("data", "code"), SESSION_FAULTS.values(), ids=SESSION_FAULTS.keys())
def test_session_faults_send_goaway(data: bytes, code: ErrorCode) -> None:
    server = live_server()
    out = server.receive_message(data)
    assert_session_fault(server, out, code)
    # The three live streams were reported failed.
    assert {e.stream_id for e in of_type(out, events.StreamReset)} >= {1, 2, 3}


def test_data_beyond_the_session_window_is_a_session_fault() -> None:
    server = live_server(Settings(session_window=2 * KiB, initial_stream_window=64 * KiB))
    out = server.receive_message(message(frames.Data(1, bytes(2 * KiB))))
    assert out == [events.DataReceived(1, bytes(2 * KiB))]
    assert frames.WindowUpdate(0, 2 * KiB) in drain_frames(server)
    out = server.receive_message(message(frames.Data(3, bytes(2 * KiB + 1))))
    assert_session_fault(server, out, ErrorCode.FLOW_CONTROL_ERROR)


def test_text_message_ends_the_session() -> None:
    server = live_server()
    out = server.receive_text()
    assert_session_fault(server, out, ErrorCode.PROTOCOL_ERROR)
    assert server.receive_text() == []


@pytest.mark.parametrize(
    "first",
    [frames.Ping(1), frames.Data(1, b"x"), frames.Open(1, HTTP), frames.GoAway(0, 0)],
    ids=lambda f: type(f).__name__,
)
def test_frames_before_hello_end_the_session(first: frames.Frame) -> None:
    server = Connection(Role.SERVER)
    drain_frames(server)
    out = server.receive_message(message(first, hello()))
    assert_session_fault(server, out, ErrorCode.PROTOCOL_ERROR)
    assert server.peer_settings is None


BAD_HELLOS: dict[str, tuple[dict[str, Any], ErrorCode]] = {
    "version 2": ({"version": 2}, ErrorCode.UNSUPPORTED_VERSION),
    "version missing": ({"version": None}, ErrorCode.UNSUPPORTED_VERSION),
    "version as string": ({"version": "1"}, ErrorCode.UNSUPPORTED_VERSION),
    "version as bool": ({"version": True}, ErrorCode.UNSUPPORTED_VERSION),
    "version as float": ({"version": 1.0}, ErrorCode.UNSUPPORTED_VERSION),
    "window missing": ({"initial_stream_window": None}, ErrorCode.PROTOCOL_ERROR),
    "window as string": ({"session_window": "16M"}, ErrorCode.PROTOCOL_ERROR),
    "window as bool": ({"max_concurrent_streams": True}, ErrorCode.PROTOCOL_ERROR),
    "window of zero": ({"initial_stream_window": 0}, ErrorCode.PROTOCOL_ERROR),
    "frame size too small": ({"max_frame_size": 10}, ErrorCode.PROTOCOL_ERROR),
    "message smaller than a frame": ({"max_message_size": 1024}, ErrorCode.PROTOCOL_ERROR),
}


@pytest.mark.parametrize(("fields", "code"), BAD_HELLOS.values(), ids=BAD_HELLOS.keys())
def test_bad_hello(fields: dict[str, Any], code: ErrorCode) -> None:
    server = Connection(Role.SERVER)
    drain_frames(server)
    bad = hello(**fields)
    if None in fields.values():
        bad = frames.Hello({k: v for k, v in bad.settings.items() if v is not None})
    out = server.receive_message(message(bad))
    assert_session_fault(server, out, code)
    assert out == [events.ConnectionTerminated(code, out[-1].reason, remote=False)]  # type: ignore[union-attr]


def test_hello_ignores_unknown_settings() -> None:
    server = Connection(Role.SERVER)
    out = server.receive_message(message(hello(future_knob=3, keepalive_interval=1)))
    assert out == [events.HelloReceived(Settings())]


def test_good_frames_before_a_bad_one_still_count() -> None:
    server = live_server()
    data = message(frames.Data(1, b"ok"), frames.End(1), frames.Open(4, HTTP))
    out = server.receive_message(data)
    assert out[:2] == [events.DataReceived(1, b"ok"), events.StreamEnded(1)]
    assert_session_fault(server, out, ErrorCode.PROTOCOL_ERROR)


def test_a_malformed_message_is_rejected_whole() -> None:
    """Decoding checks every frame before any is acted on."""
    server = live_server()
    out = server.receive_message(message(frames.Data(1, b"ok")) + raw([99, 0]))
    assert not of_type(out, events.DataReceived)
    assert_session_fault(server, out, ErrorCode.PROTOCOL_ERROR)


def test_frames_after_a_fatal_goaway_in_the_same_message_are_ignored() -> None:
    server = live_server()
    out = server.receive_message(
        message(frames.GoAway(0, ErrorCode.INTERNAL_ERROR), frames.Ping(5))
    )
    assert out[-1] == events.ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "", remote=True)
    assert server.data_to_send() == b""  # neither a PONG nor a GOAWAY of our own


# ------------------------------------------------------------------ stream-level faults


def test_data_beyond_the_stream_window_resets_only_that_stream() -> None:
    server = live_server(Settings(initial_stream_window=1 * KiB))
    out = server.receive_message(message(frames.Data(1, bytes(1 * KiB))))
    assert out == [events.DataReceived(1, bytes(1 * KiB))]
    out = server.receive_message(message(frames.Data(1, b"x")))
    assert_stream_fault(server, out, 1, ErrorCode.FLOW_CONTROL_ERROR)
    # The session and the other streams go on.
    assert server.receive_message(message(frames.Data(3, b"fine"))) == [
        events.DataReceived(3, b"fine")
    ]
    assert server.send_credit(0) > 0


def test_stream_window_overflow_resets_the_stream() -> None:
    server = live_server()
    out = server.receive_message(message(frames.WindowUpdate(1, 2**31 - 1)))
    assert_stream_fault(server, out, 1, ErrorCode.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize(
    ("frame", "stream_id", "code"),
    [
        # Stream 3 awaits our head; the peer is the opener: it may not send HEADERS.
        (frames.ResponseHeaders(3, 200), 3, ErrorCode.PROTOCOL_ERROR),
        # Stream 2 is ours and awaits the peer's head: no DATA or END before it.
        (frames.Data(2, b"x"), 2, ErrorCode.PROTOCOL_ERROR),
        (frames.End(2), 2, ErrorCode.PROTOCOL_ERROR),
    ],
    ids=["HEADERS from the opener", "DATA before HEADERS", "END before HEADERS"],
)
def test_out_of_order_frames_reset_the_stream(
    frame: frames.Frame, stream_id: int, code: ErrorCode
) -> None:
    server = live_server()
    out = server.receive_message(message(frame))
    assert_stream_fault(server, out, stream_id, code)


def test_headers_twice_resets_the_stream() -> None:
    server = live_server()
    assert server.receive_message(message(frames.ResponseHeaders(2, 200))) != []
    out = server.receive_message(message(frames.ResponseHeaders(2, 200)))
    assert_stream_fault(server, out, 2, ErrorCode.PROTOCOL_ERROR)


def test_data_after_the_peer_ended_is_stream_closed() -> None:
    server = live_server()
    assert server.receive_message(message(frames.End(1))) == [events.StreamEnded(1)]
    out = server.receive_message(message(frames.Data(1, b"late")))
    assert_stream_fault(server, out, 1, ErrorCode.STREAM_CLOSED)


def test_end_twice_is_stream_closed() -> None:
    server = live_server()
    out = server.receive_message(message(frames.End(1), frames.End(1)))
    assert out[0] == events.StreamEnded(1)
    assert_stream_fault(server, out[1:], 1, ErrorCode.STREAM_CLOSED)


@pytest.mark.parametrize(
    "frame",
    [
        frames.Data(5, b"x"),  # peer parity, never opened
        frames.Data(4, b"x"),  # our parity, never opened
        frames.ResponseHeaders(6, 200),
        frames.End(7),
        frames.Reset(9, 0),
        frames.WindowUpdate(11, 5),
    ],
    ids=lambda f: type(f).__name__ + str(f.stream_id),
)
def test_frames_for_idle_streams_are_refused(frame: Any) -> None:
    server = live_server()
    out = server.receive_message(message(frame))
    sid = frame.stream_id
    expected = frames.Reset(sid, ErrorCode.PROTOCOL_ERROR, f"frame for idle stream {sid}")
    assert_stream_refused_quietly(server, out, expected)


def _closed_stream_server() -> Connection:
    server = live_server()
    server.reset_stream(1)
    server.reset_stream(2)
    drain_frames(server)
    return server


@pytest.mark.parametrize(
    "frame",
    [frames.Data(1, b"late"), frames.ResponseHeaders(2, 200), frames.Data(2, b"late")],
    ids=["DATA on the peer's", "HEADERS on ours", "DATA on ours"],
)
def test_late_frames_for_closed_streams_get_stream_closed(frame: Any) -> None:
    server = _closed_stream_server()
    out = server.receive_message(message(frame))
    assert out == []
    assert not server.closed
    assert drain_frames(server) == [
        frames.Reset(frame.stream_id, ErrorCode.STREAM_CLOSED, "stream is closed")
    ]


@pytest.mark.parametrize(
    "frame",
    [frames.End(1), frames.Reset(1, 0), frames.WindowUpdate(1, 10), frames.End(2)],
    ids=["END", "RESET", "WINDOW_UPDATE", "END on ours"],
)
def test_late_end_reset_window_update_for_closed_streams_are_dropped(frame: Any) -> None:
    server = _closed_stream_server()
    assert server.receive_message(message(frame)) == []
    assert server.data_to_send() == b""


def test_late_data_for_a_closed_stream_still_returns_session_credit() -> None:
    server = live_server(Settings(session_window=4 * KiB))
    server.reset_stream(1)
    drain_frames(server)
    out = server.receive_message(message(frames.Data(1, bytes(4 * KiB))))
    assert out == []
    sent = drain_frames(server)
    assert frames.WindowUpdate(0, 4 * KiB) in sent


def test_reset_with_an_unknown_code_reads_as_internal_error() -> None:
    server = live_server()
    out = server.receive_message(message(frames.Reset(1, 4242, "from the future")))
    assert out == [events.StreamReset(1, ErrorCode.INTERNAL_ERROR, "from the future", remote=True)]


def test_peer_reset_of_a_finished_stream_with_data_still_queued() -> None:
    """Both halves ended but our bytes are still queued: the peer may give up on them with
    RESET. That is a legal RESET, reported with the peer's code, and never answered with one."""
    server = live_server(Settings())
    server.receive_message(message(frames.End(1)))
    server.send_data(1, bytes(300 * KiB))  # more than the peer's window
    server.end_stream(1)
    drain_frames(server)
    assert server.stream_state(1) is StreamState.CLOSED
    assert server.outbound_buffered(1) > 0
    out = server.receive_message(message(frames.Reset(1, ErrorCode.CANCEL, "reader gone")))
    assert out == [events.StreamReset(1, ErrorCode.CANCEL, "reader gone", remote=True)]
    assert server.outbound_buffered(1) == 0
    assert server.data_to_send() == b""


def test_long_local_reasons_are_truncated_to_fit_a_frame() -> None:
    """RESET and GOAWAY reasons are bounded, so a chatty caller cannot make the peer see an
    oversized frame and kill the session."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, Settings(max_frame_size=1 * KiB))
    server.receive_message(client.data_to_send())
    client.receive_message(server.data_to_send())
    client.open_stream(HTTP)
    server.receive_message(client.data_to_send())
    client.reset_stream(1, ErrorCode.CANCEL, "why " * 2000)
    client.close(ErrorCode.NO_ERROR, "bye " * 2000)
    out = server.receive_message(client.data_to_send())
    assert [type(e) for e in out] == [events.StreamReset, events.GoAwayReceived]
    assert not server.closed


# ------------------------------------------------------------------ fuzzing


def _fuzz_target() -> Connection:
    """Peer streams 1 (answered), 3 (awaiting head), 5 (ended by peer); ours 2 and 4 (answered)."""
    server = live_server(Settings(initial_stream_window=4 * KiB, session_window=16 * KiB))
    server.receive_message(message(frames.Open(5, HTTP), frames.End(5)))
    server.open_stream(HTTP)
    server.receive_message(message(frames.ResponseHeaders(4, 204)))
    server.send_data(1, bytes(10 * KiB))
    server.send_data(4, b"queued")
    return server


VALID_MESSAGES = [
    message(frames.Data(1, b"abc"), frames.End(1)),
    message(frames.Open(7, HTTP, {"u": "x"}), frames.Data(7, b"body")),
    message(frames.ResponseHeaders(2, 200, (("a", "b"),)), frames.Data(2, b"r")),
    message(frames.WindowUpdate(0, 100), frames.WindowUpdate(4, 10)),
    message(frames.Reset(3, 7, "bye"), frames.Ping(3), frames.Pong(1)),
    message(frames.GoAway(3, 0, "drain"), frames.Open(9, DIAL)),
    message(hello()),
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-2, max_value=12),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=64),
)
wire_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=8,
)
# Frame-shaped arrays: a plausible type and stream id, then anything.
frame_like = st.tuples(
    st.integers(min_value=-1, max_value=11), st.integers(min_value=-1, max_value=12)
).flatmap(lambda head: st.lists(wire_values, max_size=5).map(lambda rest: [*head, *rest]))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_MESSAGES)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.sampled_from(VALID_MESSAGES))
    return bytes(data)


inputs = st.one_of(
    st.binary(max_size=200),
    mutated(),
    st.lists(frame_like, min_size=1, max_size=4).map(lambda items: raw(*items)),
    st.sampled_from(VALID_MESSAGES),
)


def _check_output(conn: Connection) -> None:
    """What the connection sends is always valid for a default peer."""
    while data := conn.data_to_send():
        decode(data, max_frame_size=64 * KiB)


@PROFILE
@given(st.lists(st.one_of(inputs, st.just(None)), min_size=1, max_size=8))
@example([b"\xc1"])
@example([raw([3, 1, b"x"]), None, raw([3, 1, b"y"])])
def test_fuzzed_input_never_raises(messages: list[bytes | None]) -> None:
    conn = _fuzz_target()
    terminated = False
    for data in messages:
        out = conn.receive_text() if data is None else conn.receive_message(data)
        assert isinstance(out, list)
        assert all(isinstance(e, events.Event) for e in out)
        if terminated:
            assert out == []
        terminal = of_type(out, events.ConnectionTerminated)
        assert len(terminal) <= 1
        if terminal:
            assert out[-1] is terminal[0]
            assert conn.closed
            terminated = True
        _check_output(conn)
        conn.acknowledge_data(1, 100)
    if terminated:
        assert conn.receive_message(VALID_MESSAGES[0]) == []
        assert conn.data_to_send() == b""
