"""Flow control and outbound scheduling through real Connections."""

from __future__ import annotations

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.settings import FRAME_OVERHEAD, Settings
from tests.tunnel.helpers import (
    HTTP,
    ConnectionPair,
    decode,
    drain_frames,
    handshaken,
    hello,
    message,
    of_type,
)

KiB = 1024


def _open_streams(pair: ConnectionPair, n: int) -> list[int]:
    ids = [pair.client.conn.open_stream(HTTP) for _ in range(n)]
    pair.pump()
    for sid in ids:
        pair.server.conn.send_headers(sid, 200)
    pair.pump()
    pair.client.take_events()
    pair.server.take_events()
    return ids


def test_sender_stops_at_the_stream_window_and_resumes_on_update() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=4 * KiB))
    [sid] = _open_streams(pair, 1)
    s, c = pair.server.conn, pair.client.conn
    s.send_data(sid, bytes(10 * KiB))
    pair.pump()
    assert len(pair.client.data(sid)) == 4 * KiB
    assert s.send_credit(sid) == 0
    assert s.outbound_buffered(sid) == 6 * KiB
    c.acknowledge_data(sid, 4 * KiB)
    pair.pump()
    assert len(pair.client.data(sid)) == 8 * KiB
    c.acknowledge_data(sid, 4 * KiB)
    pair.pump()
    assert pair.client.data(sid) == bytes(10 * KiB)
    assert s.outbound_buffered(sid) == 0


def test_window_updates_are_batched() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=4 * KiB))
    [sid] = _open_streams(pair, 1)
    pair.server.conn.send_data(sid, bytes(2 * KiB))
    pair.pump()
    c = pair.client.conn
    c.acknowledge_data(sid, 500)  # below a quarter of the window: nothing yet
    assert c.data_to_send() == b""
    c.acknowledge_data(sid, 524)
    assert drain_frames(c) == [frames.WindowUpdate(sid, 1024)]


def test_acknowledging_after_the_peer_ended_sends_nothing() -> None:
    pair = ConnectionPair(Settings(initial_stream_window=4 * KiB))
    [sid] = _open_streams(pair, 1)
    pair.server.conn.send_data(sid, bytes(4 * KiB))
    pair.server.conn.end_stream(sid)
    pair.pump()
    pair.client.conn.acknowledge_data(sid, 4 * KiB)
    assert pair.client.conn.data_to_send() == b""


def test_data_frames_are_capped_at_the_peer_max_frame_size() -> None:
    pair = ConnectionPair(Settings(max_frame_size=2 * KiB))
    [sid] = _open_streams(pair, 1)
    pair.server.conn.send_data(sid, bytes(7 * KiB))
    data = of_type(drain_frames(pair.server.conn), frames.Data)
    assert [len(f.data) for f in data] == [2 * KiB, 2 * KiB, 2 * KiB, 1 * KiB]


def test_messages_respect_the_peer_message_size_and_max_bytes() -> None:
    peer = Settings(max_frame_size=2 * KiB, max_message_size=5 * KiB)
    pair = ConnectionPair(peer)
    ids = _open_streams(pair, 3)
    s = pair.server.conn
    for sid in ids:
        s.send_data(sid, bytes(10 * KiB))
    while msg := s.data_to_send():
        assert len(msg) <= 5 * KiB
        decode(msg)
    for sid in ids:
        s.send_data(sid, bytes(3 * KiB))
    while msg := s.data_to_send(max_bytes=1500):
        assert len(msg) <= 1500


def test_a_tiny_max_bytes_never_yields_empty_or_negative_frames() -> None:
    pair = ConnectionPair()
    [sid] = _open_streams(pair, 1)
    s = pair.server.conn
    s.send_data(sid, b"abcdef")
    credit = s.send_credit(sid)
    for max_bytes in (1, 10, FRAME_OVERHEAD):
        assert s.data_to_send(max_bytes) == b""
        assert s.send_credit(sid) == credit
        assert s.outbound_buffered(sid) == 6
    assert decode(s.data_to_send(FRAME_OVERHEAD + 10)) == [frames.Data(sid, b"abcdef")]


def test_data_does_not_start_in_a_nearly_full_message() -> None:
    pair = ConnectionPair()
    [sid] = _open_streams(pair, 1)
    s = pair.server.conn
    s.send_data(sid, bytes(5000))
    s.acknowledge_data(sid, 0)
    s.handle_timer(1e6)  # the handshake was heard in this interval: no PING yet
    s.handle_timer(2e6)  # a quiet interval: queues a PING, a control frame of a few bytes
    first = decode(s.data_to_send(max_bytes=FRAME_OVERHEAD + 900))
    assert [type(f) for f in first] == [frames.Ping]
    assert [type(f) for f in decode(s.data_to_send(max_bytes=2000))] == [frames.Data]


def test_write_chunks_are_split_and_joined_across_frames() -> None:
    pair = ConnectionPair(Settings(max_frame_size=1 * KiB))
    [sid] = _open_streams(pair, 1)
    s = pair.server.conn
    chunks = [b"a" * 300, b"b" * 300, b"c" * 1000, b"d" * 1024, b"e" * 10]
    for chunk in chunks:
        s.send_data(sid, chunk)
    data = of_type(drain_frames(s), frames.Data)
    assert [len(f.data) for f in data] == [1024, 1024, 586]
    assert b"".join(f.data for f in data) == b"".join(chunks)


def test_control_frames_go_ahead_of_queued_data() -> None:
    pair = ConnectionPair()
    [a, b] = _open_streams(pair, 2)
    s = pair.server.conn
    s.send_data(a, bytes(100 * KiB))
    s.reset_stream(b)
    s.handle_timer(1e6)
    s.handle_timer(2e6)  # the second, quiet, interval queues a PING
    out = decode(s.data_to_send())
    assert [type(f) for f in out[:2]] == [frames.Reset, frames.Ping]
    assert all(isinstance(f, frames.Data) for f in out[2:])


def test_open_is_never_overtaken_by_its_data_when_control_spans_messages() -> None:
    """With more control frames than fit one message, no DATA may jump ahead of them (here:
    the OPEN of the stream the DATA belongs to)."""
    pair = ConnectionPair(server_settings=Settings(max_message_size=200 * KiB))
    c = pair.client.conn
    ids = [c.open_stream(HTTP, {"token": "t" * 60 * KiB}) for _ in range(5)]
    for sid in ids:
        c.send_data(sid, b"body")
    seen_open: set[int] = set()
    while msg := c.data_to_send():
        for frame in decode(msg):
            if isinstance(frame, frames.Open):
                seen_open.add(frame.stream_id)
            elif isinstance(frame, frames.Data):
                assert frame.stream_id in seen_open, "DATA before its OPEN"
        pair.server.events.extend(pair.server.conn.receive_message(msg))
    assert not pair.server.conn.closed
    assert [pair.server.data(sid) for sid in ids] == [b"body"] * 5


def test_data_is_interleaved_round_robin() -> None:
    pair = ConnectionPair(Settings(max_frame_size=1 * KiB))
    bulk, *small = _open_streams(pair, 5)
    s = pair.server.conn
    s.send_data(bulk, bytes(200 * KiB))
    for sid in small:
        s.send_data(sid, b"x" * 10)
    first = [f.stream_id for f in of_type(decode(s.data_to_send()), frames.Data)]
    assert first[:5] == [bulk, *small]
    assert set(first[5:]) == {bulk}


def test_session_window_limits_all_streams_together() -> None:
    pair = ConnectionPair(Settings(session_window=4 * KiB, initial_stream_window=64 * KiB))
    ids = _open_streams(pair, 3)
    s = pair.server.conn
    for sid in ids:
        s.send_data(sid, bytes(3 * KiB))
    first = of_type(decode(s.data_to_send()), frames.Data)
    assert sum(len(f.data) for f in first) == 4 * KiB
    assert s.send_credit(0) == 0
    assert s.data_to_send() == b""
    pair.client.conn.receive_message(message(*first))
    # The receiver returns session credit as soon as bytes arrive, even if nobody reads them.
    pair.pump()
    assert s.send_credit(0) > 0
    assert all(s.outbound_buffered(sid) == 0 for sid in ids)


def test_session_credit_refill_resumes_ready_streams() -> None:
    server = Connection(Role.SERVER)
    server.receive_message(message(hello(Settings(session_window=100))))
    server.receive_message(message(frames.Open(1, HTTP)))
    server.send_headers(1, 200)
    drain_frames(server)
    server.send_data(1, bytes(100))
    drain_frames(server)
    assert server.send_credit(0) == 0
    server.send_data(1, b"more")
    assert server.data_to_send() == b""
    server.receive_message(message(frames.WindowUpdate(0, 10)))
    assert drain_frames(server) == [frames.Data(1, b"more")]


def test_window_update_for_an_idle_writer_just_adds_credit() -> None:
    server = handshaken(Role.SERVER)
    server.receive_message(message(frames.Open(1, HTTP)))
    before = server.send_credit(1)
    assert server.receive_message(message(frames.WindowUpdate(1, 100))) == []
    assert server.send_credit(1) == before + 100
    assert server.data_to_send() == b""


def test_a_stalled_reader_never_blocks_other_streams() -> None:
    window = 8 * KiB
    pair = ConnectionPair(Settings(initial_stream_window=window, session_window=16 * KiB))
    stalled, *others = _open_streams(pair, 4)
    s, c = pair.server.conn, pair.client.conn
    s.send_data(stalled, bytes(1024 * KiB))
    for round_ in range(20):
        for sid in others:
            s.send_data(sid, b"ping %d" % round_)
        pair.pump()
        for sid in others:
            got = pair.client.data(sid)
            c.acknowledge_data(sid, len(got))
        # Memory: what the stalled stream has delivered but nobody read is capped by its window.
        assert len(pair.client.data(stalled)) == window
    for sid in others:
        assert pair.client.data(sid) == b"".join(b"ping %d" % r for r in range(20))
    assert s.outbound_buffered(stalled) == 1024 * KiB - window


def test_session_window_update_is_sent_once_a_quarter_arrived() -> None:
    client = handshaken(Role.CLIENT, Settings(session_window=4 * KiB))
    client.open_stream(HTTP)
    drain_frames(client)
    client.receive_message(message(frames.ResponseHeaders(1, 200)))
    client.receive_message(message(frames.Data(1, bytes(1000))))
    assert client.data_to_send() == b""
    out = client.receive_message(message(frames.Data(1, bytes(24))))
    assert out == [events.DataReceived(1, bytes(24))]
    assert drain_frames(client) == [frames.WindowUpdate(0, 1024)]


def test_hello_with_tiny_windows_still_makes_progress() -> None:
    tiny = Settings(initial_stream_window=1, session_window=1)
    pair = ConnectionPair(tiny)
    [sid] = _open_streams(pair, 1)
    pair.server.conn.send_data(sid, b"xyz")
    for _ in range(3):
        pair.pump()
        pair.client.conn.acknowledge_data(sid, 1)
    pair.pump()
    assert pair.client.data(sid) == b"xyz"


def test_encode_data_overhead_fits_the_frame_overhead_margin() -> None:
    assert len(codec.encode_data(2**63 - 1, bytes(70_000))) - 70_000 <= FRAME_OVERHEAD
    assert hello().settings["max_frame_size"] == 64 * KiB
