"""Keepalive on a fake clock, and GOAWAY: graceful drain and fatal shutdown."""

from __future__ import annotations

import pytest

from clusternet_aa.tunnel.protocol import events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, ConnectionState, Role
from clusternet_aa.tunnel.protocol.errors import ConnectionClosedError, ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.protocol.state import StreamState
from tests.tunnel.helpers import (
    DIAL,
    HTTP,
    ConnectionPair,
    drain_frames,
    handshaken,
    hello,
    message,
    of_type,
)


def _drained(conn: Connection) -> bool:
    """``conn.is_drained``, read through a call so mypy does not pin an earlier narrowing."""
    return conn.is_drained


FAST = Settings(keepalive_interval=10.0, keepalive_misses=3)

# ------------------------------------------------------------------ keepalive


def test_ping_after_each_quiet_interval() -> None:
    conn = Connection(Role.CLIENT, FAST, now=100.0)
    conn.receive_message(message(hello()))
    drain_frames(conn)
    assert conn.next_deadline() == 110.0
    assert conn.handle_timer(109.9) == []
    assert conn.data_to_send() == b""
    assert conn.handle_timer(110.0) == []  # the HELLO was heard in this interval: no PING
    assert drain_frames(conn) == []
    assert conn.next_deadline() == 120.0
    assert conn.handle_timer(120.0) == []  # a quiet interval
    assert drain_frames(conn) == [frames.Ping(1)]
    conn.receive_message(message(frames.Pong(1)))
    conn.handle_timer(135.0)  # late, and the PONG was heard: the next is an interval after this
    assert drain_frames(conn) == []
    assert conn.next_deadline() == 145.0
    conn.handle_timer(145.0)
    assert drain_frames(conn) == [frames.Ping(2)]


def test_no_ping_while_the_peer_is_heard() -> None:
    """Traffic (or the peer's own PING) proves the link is alive, so no PING is spent on it."""
    conn = handshaken(Role.SERVER, FAST)
    for i in range(1, 20):
        conn.receive_message(message(frames.WindowUpdate(0, 1)))
        assert conn.handle_timer(10.0 * i) == []
        assert drain_frames(conn) == []
    assert not conn.closed


def test_link_is_dead_after_the_configured_misses() -> None:
    conn = Connection(Role.SERVER, FAST)
    drain_frames(conn)
    for t in (10.0, 20.0):  # two quiet intervals, each followed by a PING
        assert conn.handle_timer(t) == []
        assert drain_frames(conn) == [frames.Ping(int(t // 10))]
    out = conn.handle_timer(30.0)  # the third quiet interval
    reason = "nothing heard for 3 keepalive intervals"
    assert out[-1] == events.ConnectionTerminated(ErrorCode.KEEPALIVE_TIMEOUT, reason, remote=False)
    assert drain_frames(conn) == [frames.GoAway(0, ErrorCode.KEEPALIVE_TIMEOUT, reason)]
    assert conn.next_deadline() is None
    assert conn.handle_timer(1000.0) == []


@pytest.mark.parametrize("misses", [1, 2, 5])
def test_misses_setting_is_obeyed(misses: int) -> None:
    conn = Connection(Role.SERVER, Settings(keepalive_interval=1.0, keepalive_misses=misses))
    t = 0.0
    out: list[events.Event] = []
    while not conn.closed:
        t += 1.0
        out = conn.handle_timer(t)
    assert t == misses
    assert out[-1].code is ErrorCode.KEEPALIVE_TIMEOUT  # type: ignore[union-attr]
    assert len(of_type(drain_frames(conn), frames.Ping)) == misses - 1


def test_dead_link_fails_open_streams() -> None:
    conn = handshaken(Role.CLIENT, FAST)
    sid = conn.open_stream(HTTP)
    out: list[events.Event] = []
    for t in (10.0, 20.0, 30.0, 40.0):  # heard (the handshake), then three quiet intervals
        out += conn.handle_timer(t)
    assert out == [
        events.StreamReset(sid, ErrorCode.KEEPALIVE_TIMEOUT, out[0].reason, remote=False),  # type: ignore[union-attr]
        events.ConnectionTerminated(ErrorCode.KEEPALIVE_TIMEOUT, out[1].reason, remote=False),  # type: ignore[union-attr]
    ]


@pytest.mark.parametrize(
    "heard",
    [frames.Pong(1), frames.Ping(9), frames.WindowUpdate(0, 1)],
    ids=["pong", "peer ping", "any frame"],
)
def test_any_message_keeps_the_link_alive(heard: frames.Frame) -> None:
    conn = handshaken(Role.SERVER, FAST)
    for i in range(1, 50):
        assert conn.handle_timer(10.0 * i) == []
        conn.receive_message(message(heard))
    assert not conn.closed


def test_even_a_bad_message_counts_as_hearing_from_the_peer() -> None:
    conn = handshaken(Role.SERVER, FAST)
    conn.handle_timer(10.0)
    conn.handle_timer(20.0)
    conn.receive_message(message(frames.Data(99, b"x")))  # a stream fault, not a session one
    conn.handle_timer(30.0)
    conn.handle_timer(40.0)
    assert not conn.closed


def test_pong_without_traffic_also_resets_the_count() -> None:
    conn = handshaken(Role.SERVER, FAST)
    conn.handle_timer(10.0)  # the handshake was heard
    conn.handle_timer(20.0)
    conn.handle_timer(30.0)  # two misses so far
    conn.receive_message(message(frames.Pong(2)))
    conn.handle_timer(40.0)  # heard: the count starts again
    conn.handle_timer(50.0)
    conn.handle_timer(60.0)
    assert not conn.closed
    assert conn.handle_timer(70.0)[-1].code is ErrorCode.KEEPALIVE_TIMEOUT  # type: ignore[union-attr]


def test_a_pair_on_a_shared_clock_stays_up() -> None:
    pair = ConnectionPair(FAST, FAST)
    for i in range(1, 100):
        now = 10.0 * i
        pair.client.conn.handle_timer(now)
        pair.server.conn.handle_timer(now)
        pair.pump()
    assert not pair.client.conn.closed
    assert not pair.server.conn.closed
    # In step, both sides find every other interval quiet and ping then: 49 exchanges each.
    assert len(of_type(pair.client.events, events.PongReceived)) == 49
    assert len(of_type(pair.server.events, events.PongReceived)) == 49


def test_a_pair_out_of_step_shares_one_exchange_between_both_sides() -> None:
    """On an idle link whichever timer fires first pings; the other side, having heard that
    PING, stays silent: about one exchange per 1.5 intervals for the link, not two per interval.
    """
    pair = ConnectionPair(FAST, FAST)
    rounds = 300
    for i in range(1, rounds + 1):
        pair.client.conn.handle_timer(10.0 * i)
        pair.pump()
        pair.server.conn.handle_timer(10.0 * i + 5.0)
        pair.pump()
    assert not pair.client.conn.closed
    assert not pair.server.conn.closed
    client_pongs = len(of_type(pair.client.events, events.PongReceived))
    server_pongs = len(of_type(pair.server.events, events.PongReceived))
    assert client_pongs + server_pongs == rounds * 2 // 3
    assert abs(client_pongs - server_pongs) <= 1


def test_a_silent_peer_is_detected_by_both_sides() -> None:
    pair = ConnectionPair(FAST, FAST)
    for i in range(1, 5):
        pair.client.conn.handle_timer(10.0 * i)
        pair.client.conn.data_to_send()  # the link eats everything
    assert pair.client.conn.closed


# ------------------------------------------------------------------ graceful drain


def test_drain_lets_streams_in_flight_finish_and_refuses_new_ones() -> None:
    pair = ConnectionPair()
    c, s = pair.client.conn, pair.server.conn
    first, _ = pair.request()
    second = c.open_stream(DIAL)
    pair.pump()
    pair.client.take_events()
    pair.server.take_events()
    racing = c.open_stream(HTTP)  # sent before the client hears the GOAWAY
    assert s.close(ErrorCode.NO_ERROR, "rolling update") == []
    assert s.state is ConnectionState.DRAINING
    assert not s.is_drained
    with pytest.raises(ConnectionClosedError):
        s.open_stream(HTTP)
    pair.pump()
    # The server refused the racing OPEN; the client learned from the GOAWAY it was refused.
    assert pair.server.take_events() == []
    client_events = pair.client.take_events()
    assert client_events == [
        events.StreamReset(racing, ErrorCode.REFUSED_STREAM, "refused by GOAWAY", remote=True),
        events.GoAwayReceived(second, ErrorCode.NO_ERROR, "rolling update"),
    ]
    assert c.state is ConnectionState.DRAINING
    with pytest.raises(ConnectionClosedError):
        c.open_stream(HTTP)
    # Streams in flight finish normally, in both directions.
    s.send_headers(second, 200)
    for sid in (first, second):
        s.send_data(sid, b"answer %d" % sid)
        s.end_stream(sid)
        c.send_data(sid, b"more request")
        c.end_stream(sid)
    pair.pump()
    for sid in (first, second):
        assert pair.client.data(sid) == b"answer %d" % sid
        assert pair.server.data(sid) == b"more request"
    assert _drained(s)
    assert _drained(c)
    assert not s.closed
    assert s.take_closed_streams() == [first, second]
    assert s.take_closed_streams() == []
    # The driver then closes for good: no second GOAWAY goes out.
    out = s.close()
    assert out == [events.ConnectionTerminated(ErrorCode.NO_ERROR, "drained", remote=False)]
    assert s.data_to_send() == b""
    assert c.connection_lost() == [
        events.ConnectionTerminated(ErrorCode.NO_ERROR, "drained", remote=True)
    ]
    assert c.connection_lost() == []


def test_close_without_streams_ends_at_once_after_goaway() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    pair.server.conn.reset_stream(sid)
    out = pair.server.conn.close(ErrorCode.NO_ERROR, "bye")
    assert out == [events.ConnectionTerminated(ErrorCode.NO_ERROR, "bye", remote=False)]
    assert of_type(drain_frames(pair.server.conn), frames.GoAway) == [
        frames.GoAway(sid, ErrorCode.NO_ERROR, "bye")
    ]


def test_close_twice_sends_one_goaway() -> None:
    pair = ConnectionPair()
    pair.request()
    s = pair.server.conn
    assert s.close() == []
    assert s.close() == []
    assert len(of_type(drain_frames(s), frames.GoAway)) == 1


def test_new_opens_during_drain_are_refused_with_refused_stream() -> None:
    server = handshaken(Role.SERVER)
    server.receive_message(message(frames.Open(1, HTTP)))
    server.close()
    assert drain_frames(server) == [frames.GoAway(1, ErrorCode.NO_ERROR, "")]
    assert server.receive_message(message(frames.Open(3, HTTP))) == []
    assert drain_frames(server) == [
        frames.Reset(3, ErrorCode.REFUSED_STREAM, "session is draining")
    ]
    # Its late DATA gets STREAM_CLOSED; the session goes on.
    assert server.receive_message(message(frames.Data(3, b"x"))) == []
    assert drain_frames(server) == [frames.Reset(3, ErrorCode.STREAM_CLOSED, "stream is closed")]
    assert server.stream_state(1) is StreamState.OPEN_AWAITING_HEAD


def test_our_streams_above_last_stream_id_are_refused() -> None:
    client = handshaken(Role.CLIENT)
    ids = [client.open_stream(HTTP) for _ in range(4)]  # 1, 3, 5, 7
    server_opened = 2
    client.receive_message(message(frames.Open(server_opened, DIAL)))
    out = client.receive_message(message(frames.GoAway(3, ErrorCode.NO_ERROR, "")))
    assert out == [
        events.StreamReset(5, ErrorCode.REFUSED_STREAM, "refused by GOAWAY", remote=True),
        events.StreamReset(7, ErrorCode.REFUSED_STREAM, "refused by GOAWAY", remote=True),
        events.GoAwayReceived(3, ErrorCode.NO_ERROR, ""),
    ]
    assert client.open_streams == 3  # 1, 3 and the peer's 2 live on
    assert client.stream_state(ids[0]) is StreamState.OPEN_AWAITING_HEAD
    assert client.take_closed_streams() == [5, 7]
    # A second GOAWAY may lower the bar further.
    out = client.receive_message(message(frames.GoAway(1, ErrorCode.NO_ERROR, "")))
    assert out[0] == events.StreamReset(3, ErrorCode.REFUSED_STREAM, "refused by GOAWAY", True)
    # Our own GOAWAY after the peer's: still sent once.
    client.close()
    client.close()
    assert len(of_type(drain_frames(client), frames.GoAway)) == 1


def test_fatal_goaway_from_the_peer_ends_everything() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    pair.client.take_events()
    out = pair.client.conn.receive_message(
        message(frames.GoAway(sid, ErrorCode.INTERNAL_ERROR, "hub crashed"))
    )
    assert out == [
        events.GoAwayReceived(sid, ErrorCode.INTERNAL_ERROR, "hub crashed"),
        events.StreamReset(sid, ErrorCode.INTERNAL_ERROR, "hub crashed", remote=True),
        events.ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "hub crashed", remote=True),
    ]
    assert pair.client.conn.data_to_send() == b""  # no GOAWAY answers a GOAWAY


def test_goaway_with_an_unknown_code_is_fatal_internal_error() -> None:
    client = handshaken(Role.CLIENT)
    out = client.receive_message(message(frames.GoAway(0, 999, "?")))
    assert out[0] == events.GoAwayReceived(0, ErrorCode.INTERNAL_ERROR, "?")
    assert client.closed


def test_connection_lost_without_drain_fails_every_stream() -> None:
    pair = ConnectionPair()
    sid, _ = pair.request()
    assert pair.client.conn.connection_lost() == [
        events.StreamReset(sid, ErrorCode.INTERNAL_ERROR, "connection lost", remote=True),
        events.ConnectionTerminated(ErrorCode.INTERNAL_ERROR, "connection lost", remote=True),
    ]
    assert pair.client.conn.data_to_send() == b""


def test_drain_of_a_session_with_queued_data_waits_for_it() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=1024))
    sid, _ = pair.request()
    s, c = pair.server.conn, pair.client.conn
    s.send_data(sid, bytes(4096))
    s.end_stream(sid)
    c.end_stream(sid)
    s.close()
    pair.pump()
    assert not s.is_drained  # bytes still queued behind the client's window
    while not _drained(s):
        c.acknowledge_data(sid, 1024)
        pair.pump()
    assert pair.client.data(sid) == bytes(4096)
