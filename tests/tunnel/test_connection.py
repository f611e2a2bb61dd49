"""Connection behaviour on a well-behaved link: handshake, streams, local API errors."""

from __future__ import annotations

import pytest

from clusternet_aa.tunnel.protocol import events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, ConnectionState, Role
from clusternet_aa.tunnel.protocol.errors import (
    ConnectionClosedError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
    TunnelError,
)
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.protocol.state import StreamState
from tests.tunnel.helpers import (
    DIAL,
    HTTP,
    ConnectionPair,
    decode,
    drain_frames,
    handshaken,
    hello,
    message,
    of_type,
)

# ------------------------------------------------------------------ handshake


def test_hello_is_the_first_frame_each_side_sends() -> None:
    conn = Connection(Role.CLIENT, Settings(max_frame_size=2048))
    assert conn.control_backlog > 0
    assert decode(conn.data_to_send()) == [hello(Settings(max_frame_size=2048))]
    assert conn.control_backlog == 0
    assert conn.data_to_send() == b""


def test_handshake_exchanges_settings() -> None:
    client_settings = Settings(initial_stream_window=1000, session_window=5000)
    pair = ConnectionPair(client_settings, Settings(max_concurrent_streams=7), handshake=False)
    pair.pump()
    [c_hello] = pair.client.take_events()
    [s_hello] = pair.server.take_events()
    assert c_hello == events.HelloReceived(Settings(max_concurrent_streams=7))
    assert s_hello == events.HelloReceived(client_settings)
    assert pair.server.conn.peer_settings == client_settings
    # Each side sends under the *peer's* windows.
    assert pair.server.conn.send_credit(0) == 5000
    assert pair.client.conn.send_credit(0) == Settings().session_window


def test_default_settings_are_the_documented_ones() -> None:
    s = Settings()
    assert (s.initial_stream_window, s.max_frame_size) == (256 * 1024, 64 * 1024)
    assert (s.keepalive_interval, s.keepalive_misses) == (15.0, 3)
    assert Connection(Role.SERVER).local_settings == s


@pytest.mark.parametrize(
    "kwargs",
    [
        {"version": 2},
        {"initial_stream_window": 0},
        {"initial_stream_window": 2**31},
        {"session_window": 0},
        {"max_frame_size": 1023},
        {"max_frame_size": 16 * 1024 * 1024 + 1},
        {"max_frame_size": 4096, "max_message_size": 4096},
        {"max_concurrent_streams": 0},
        {"keepalive_interval": 0},
        {"keepalive_misses": 0},
    ],
)
def test_invalid_local_settings_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"must|unsupported"):
        Settings(**kwargs)


# ------------------------------------------------------------------ streams


def test_stream_ids_split_by_side() -> None:
    pair = ConnectionPair()
    assert [pair.client.conn.open_stream(HTTP) for _ in range(3)] == [1, 3, 5]
    assert [pair.server.conn.open_stream(DIAL) for _ in range(3)] == [2, 4, 6]
    pair.pump()
    opened_at_server = of_type(pair.server.take_events(), events.StreamOpened)
    assert [e.stream_id for e in opened_at_server] == [1, 3, 5]
    assert opened_at_server[0] == events.StreamOpened(1, HTTP, {})
    opened_at_client = of_type(pair.client.take_events(), events.StreamOpened)
    assert [e.target for e in opened_at_client] == [DIAL] * 3


def test_full_request_response_exchange() -> None:
    pair = ConnectionPair()
    c, s = pair.client.conn, pair.server.conn
    sid = c.open_stream(HTTP, {"user": "alice"})
    assert c.stream_state(sid) is StreamState.OPEN_AWAITING_HEAD
    c.send_data(sid, b"request body")  # a body may precede the head
    c.end_stream(sid)
    assert c.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL_AWAITING_HEAD
    pair.pump()
    assert pair.server.take_events() == [
        events.StreamOpened(sid, HTTP, {"user": "alice"}),
        events.DataReceived(sid, b"request body"),
        events.StreamEnded(sid),
    ]
    assert s.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE_AWAITING_HEAD
    s.send_headers(sid, 200, (("content-type", "text/plain"),), {"served-by": "child"})
    s.send_data(sid, b"hello ")
    s.send_data(sid, b"world")
    s.end_stream(sid)
    assert s.stream_state(sid) is StreamState.CLOSED
    assert s.open_streams == 1  # kept until its queued bytes and END are out
    pair.pump()
    assert s.open_streams == 0
    assert pair.client.take_events() == [
        events.ResponseReceived(
            sid, 200, (("content-type", "text/plain"),), {"served-by": "child"}
        ),
        events.DataReceived(sid, b"hello world"),
        events.StreamEnded(sid),
    ]
    assert c.open_streams == 0
    assert c.stream_state(sid) is StreamState.CLOSED


def test_server_initiated_dial_stream() -> None:
    pair = ConnectionPair()
    sid = pair.server.conn.open_stream(DIAL)
    pair.pump()
    assert pair.client.take_events() == [events.StreamOpened(sid, DIAL, {})]
    pair.client.conn.send_headers(sid, 200)
    pair.client.conn.send_data(sid, b"\x00\x01")
    pair.pump()
    assert pair.server.take_events() == [
        events.ResponseReceived(sid, 200, ()),
        events.DataReceived(sid, b"\x00\x01"),
    ]


def test_empty_write_checks_state_but_sends_nothing() -> None:
    pair = ConnectionPair()
    sid = pair.client.conn.open_stream(HTTP)
    drain_frames(pair.client.conn)
    pair.client.conn.send_data(sid, b"")
    assert pair.client.conn.data_to_send() == b""
    assert pair.client.conn.outbound_buffered(sid) == 0


def test_writes_are_copied() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    buf = bytearray(b"abc")
    pair.client.conn.send_data(sid, buf)  # type: ignore[arg-type]
    buf[:] = b"xyz"
    pair.pump()
    assert pair.server.data(sid) == b"abc"


def test_end_follows_queued_data() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    pair.client.conn.send_data(sid, b"x" * 10)
    pair.client.conn.end_stream(sid)
    assert pair.client.conn.outbound_buffered(sid) == 10
    assert [type(f) for f in drain_frames(pair.client.conn)] == [frames.Data, frames.End]


def test_stream_closes_when_peer_ends_last_and_our_data_is_still_queued() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=1024))
    sid, _ = pair.request()
    c, s = pair.client.conn, pair.server.conn
    s.send_data(sid, b"r" * 3000)  # more than the client's window: some stays queued
    s.end_stream(sid)
    c.end_stream(sid)
    pair.pump()
    assert s.stream_state(sid) is StreamState.CLOSED
    assert s.outbound_buffered(sid) > 0
    assert s.open_streams == 1  # kept until the queued bytes and END are out
    c.acknowledge_data(sid, len(pair.client.data(sid)))
    pair.pump()
    c.acknowledge_data(sid, 3000)
    pair.pump()
    assert pair.client.data(sid) == b"r" * 3000
    assert of_type(pair.client.events, events.StreamEnded) == [events.StreamEnded(sid)]
    assert s.open_streams == 0
    assert c.open_streams == 0


def test_reset_by_us_reaches_the_peer_and_drops_queued_data() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    pair.client.take_events()
    pair.server.take_events()
    pair.client.conn.send_data(sid, b"never sent")
    pair.client.conn.reset_stream(sid, ErrorCode.CANCEL, "user hit ^C")
    assert pair.client.conn.outbound_buffered(sid) == 0
    assert pair.client.conn.stream_state(sid) is StreamState.CLOSED
    pair.pump()
    assert pair.server.take_events() == [
        events.StreamReset(sid, ErrorCode.CANCEL, "user hit ^C", remote=True)
    ]
    assert pair.server.conn.open_streams == 0
    assert pair.client.take_events() == []  # late frames for the dead stream are quiet


def test_reset_defaults_to_cancel_and_is_idempotent() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    pair.server.take_events()
    pair.server.conn.reset_stream(sid)
    pair.server.conn.reset_stream(sid)
    pair.server.conn.reset_stream(999)
    resets = of_type(drain_frames(pair.server.conn), frames.Reset)
    assert resets == [frames.Reset(sid, ErrorCode.CANCEL, "")]


def test_reset_of_a_closed_stream_with_queued_data_does_nothing() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=1024))
    sid, _ = pair.request()
    s = pair.server.conn
    s.send_data(sid, bytes(5000))
    s.end_stream(sid)
    pair.client.conn.end_stream(sid)
    pair.pump()
    assert s.stream_state(sid) is StreamState.CLOSED
    s.reset_stream(sid)
    assert not of_type(drain_frames(s), frames.Reset)


def test_unknown_stream_introspection() -> None:
    conn = Connection(Role.CLIENT)
    assert conn.stream_state(41) is StreamState.CLOSED
    assert conn.outbound_buffered(41) == 0
    assert conn.send_credit(41) == 0
    assert conn.send_credit(0) == 0  # no HELLO yet: no session credit


def test_streams_opened_before_the_peer_hello_send_once_it_arrives() -> None:
    pair = ConnectionPair(handshake=False)
    idle = pair.client.conn.open_stream(HTTP)
    sid = pair.client.conn.open_stream(HTTP)
    pair.client.conn.send_data(sid, b"early bytes")
    assert pair.client.conn.send_credit(sid) == 0
    pair.pump()
    assert pair.client.conn.send_credit(sid) == Settings().initial_stream_window - 11
    assert pair.server.data(sid) == b"early bytes"
    assert pair.client.conn.send_credit(idle) == Settings().initial_stream_window


# ------------------------------------------------------------------ local API misuse


def test_local_state_errors() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    c, s = pair.client.conn, pair.server.conn
    with pytest.raises(LocalProtocolError) as info:
        c.send_headers(sid, 200)  # only the responder answers
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    with pytest.raises(LocalProtocolError):
        s.send_headers(sid, 200)  # twice
    c.end_stream(sid)
    with pytest.raises(StreamClosedError):
        c.send_data(sid, b"x")
    with pytest.raises(StreamClosedError):
        c.end_stream(sid)
    with pytest.raises(StreamClosedError) as closed:
        s.send_data(12345, b"x")
    assert closed.value.code is ErrorCode.STREAM_CLOSED


def test_responder_may_not_send_data_before_its_head() -> None:
    pair = ConnectionPair()
    sid = pair.client.conn.open_stream(HTTP)
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.server.conn.send_data(sid, b"too early")
    with pytest.raises(LocalProtocolError):
        pair.server.conn.end_stream(sid)
    assert pair.server.conn.outbound_buffered(sid) == 0


def test_a_state_error_leaves_nothing_queued() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    with pytest.raises(LocalProtocolError):
        pair.server.conn.send_headers(sid, 204)
    assert pair.server.conn.data_to_send() == b""


def test_oversized_open_is_refused_locally_and_burns_no_id() -> None:
    pair = ConnectionPair(server_settings=Settings(max_frame_size=1024))
    big = {"token": "x" * 5000}
    with pytest.raises(LocalProtocolError) as info:
        pair.client.conn.open_stream(HTTP, big)
    assert info.value.code is ErrorCode.FRAME_SIZE_ERROR
    assert pair.client.conn.open_streams == 0
    assert pair.client.conn.open_stream(HTTP) == 1


def test_oversized_headers_are_refused_locally() -> None:
    pair = ConnectionPair(Settings(max_frame_size=1024))
    sid = pair.client.conn.open_stream(HTTP)
    pair.pump()
    with pytest.raises(LocalProtocolError) as info:
        pair.server.conn.send_headers(sid, 200, (("cookie", "c" * 4000),))
    assert info.value.code is ErrorCode.FRAME_SIZE_ERROR
    assert pair.server.conn.stream_state(sid) is StreamState.OPEN_AWAITING_HEAD
    pair.server.conn.send_headers(sid, 200)


def test_peer_concurrency_limit_is_obeyed_locally() -> None:
    pair = ConnectionPair(server_settings=Settings(max_concurrent_streams=2))
    c = pair.client.conn
    first = c.open_stream(HTTP)
    c.open_stream(HTTP)
    with pytest.raises(LocalProtocolError) as info:
        c.open_stream(HTTP)
    assert info.value.code is ErrorCode.REFUSED_STREAM
    c.reset_stream(first)
    assert c.open_stream(HTTP) == 5
    # Streams the peer opened do not count against the limit for ours.
    pair.server.conn.open_stream(DIAL)
    pair.pump()
    assert c.open_streams == 3


def test_streams_that_finish_normally_free_their_place_under_the_limits() -> None:
    """Hundreds of requests, each ended both ways, through a limit of 2 on either side."""
    limits = Settings(max_concurrent_streams=2)
    pair = ConnectionPair(limits, limits)
    c, s = pair.client.conn, pair.server.conn
    for _ in range(300):
        sid, _ = pair.request()
        c.end_stream(sid)
        s.end_stream(sid)
        pair.pump()
        assert c.open_streams == 0
        assert s.open_streams == 0
    c.open_stream(HTTP)
    c.open_stream(HTTP)
    with pytest.raises(LocalProtocolError):
        c.open_stream(HTTP)
    pair.pump()
    assert of_type(drain_frames(s), frames.Reset) == []  # both were accepted by the server


def test_over_limit_opens_from_the_peer_are_refused() -> None:
    server = handshaken(Role.SERVER, Settings(max_concurrent_streams=1))
    opened = server.receive_message(message(frames.Open(1, HTTP), frames.Open(3, HTTP)))
    assert opened == [events.StreamOpened(1, HTTP, {})]
    assert drain_frames(server) == [frames.Reset(3, ErrorCode.REFUSED_STREAM, "too many streams")]
    assert not server.closed


def test_closed_connection_refuses_every_action() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    c = pair.client.conn
    terminated = c.close(ErrorCode.INTERNAL_ERROR, "shutting down")
    assert terminated == [
        events.StreamReset(sid, ErrorCode.INTERNAL_ERROR, "shutting down", remote=False),
        events.ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "shutting down", remote=False),
    ]
    assert c.closed
    assert c.close() == []
    assert c.close(ErrorCode.PROTOCOL_ERROR) == []
    with pytest.raises(ConnectionClosedError) as info:
        c.open_stream(HTTP)
    assert info.value.code is ErrorCode.GOING_AWAY
    with pytest.raises(ConnectionClosedError):
        c.send_data(sid, b"x")
    with pytest.raises(ConnectionClosedError):
        c.send_headers(sid, 200)
    with pytest.raises(ConnectionClosedError):
        c.end_stream(sid)
    c.reset_stream(sid)  # quietly nothing
    c.acknowledge_data(sid, 10)
    assert decode(c.data_to_send()) == [frames.GoAway(0, ErrorCode.INTERNAL_ERROR, "shutting down")]
    assert c.data_to_send() == b""
    assert c.next_deadline() is None
    assert c.receive_message(message(frames.Ping(1))) == []
    assert c.receive_text() == []
    assert c.handle_timer(1e9) == []


def test_termination_reason_defaults_to_the_code_name_for_stream_events() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    out = pair.client.conn.close(ErrorCode.CANCEL)
    assert out[0] == events.StreamReset(sid, ErrorCode.CANCEL, "CANCEL", remote=False)


def test_ping_is_answered_with_pong() -> None:
    conn = handshaken(Role.CLIENT)
    assert conn.receive_message(message(frames.Ping(77))) == []
    assert drain_frames(conn) == [frames.Pong(77)]
    assert conn.receive_message(message(frames.Pong(3))) == [events.PongReceived(3)]


def test_unknown_stream_acknowledge_is_ignored() -> None:
    conn = handshaken(Role.SERVER)
    conn.acknowledge_data(7, 100)
    assert conn.data_to_send() == b""


# ------------------------------------------------------------------ errors module


def test_error_codes_from_a_newer_peer_read_as_internal_error() -> None:
    assert ErrorCode.from_wire(3) is ErrorCode.FLOW_CONTROL_ERROR
    assert ErrorCode.from_wire(10_000) is ErrorCode.INTERNAL_ERROR


def test_error_hierarchy_and_code_override() -> None:
    assert TunnelError("x").code is ErrorCode.INTERNAL_ERROR
    err = RemoteProtocolError("bad", ErrorCode.REFUSED_STREAM, stream_id=3)
    assert (err.code, err.stream_id) == (ErrorCode.REFUSED_STREAM, 3)
    assert RemoteProtocolError("bad").code is ErrorCode.PROTOCOL_ERROR
    assert issubclass(StreamClosedError, LocalProtocolError)
    assert issubclass(ConnectionClosedError, LocalProtocolError)


def test_connection_state_starts_open() -> None:
    conn = Connection(Role.CLIENT)
    assert conn.state is ConnectionState.OPEN
    assert not conn.closed
    assert not conn.is_drained
