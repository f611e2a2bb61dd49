"""The asyncio Session over an in-memory transport: streams, backpressure, faults, drain."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import msgpack
import pytest

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ConnectionClosedError, ErrorCode
from clusternet_aa.tunnel.protocol.settings import KiB, Settings
from clusternet_aa.tunnel.session import Session, SessionClosedError, _WriterSignal
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import MemoryTransport, memory_pair

Handler = Callable[[TunnelStream], Awaitable[None]]
GET = frames.HttpRequestHead("GET", "/api", (("accept", "application/json"),))


async def echo(stream: TunnelStream) -> None:
    stream.send_headers(200, (("x-echo", "1"),), {"path": getattr(stream.target, "path", "")})
    async for chunk in stream:
        await stream.write_all(chunk)
    stream.write_eof()


@pytest.fixture
async def pair() -> AsyncIterator[Callable[..., Awaitable[tuple[Session, Session]]]]:
    """Factory for a started (agent, hub) pair; every session is closed afterwards."""
    sessions: list[Session] = []

    async def make(
        handler: Handler | None = echo,
        agent_settings: Settings | None = None,
        hub_settings: Settings | None = None,
        **hub_kwargs: object,
    ) -> tuple[Session, Session]:
        a, b = memory_pair()
        agent = Session(a, Role.CLIENT, settings=agent_settings, handler=handler, name="agent")
        hub = Session(b, Role.SERVER, settings=hub_settings, name="hub", **hub_kwargs)  # type: ignore[arg-type]
        agent.start()
        hub.start()
        sessions.extend((agent, hub))
        await hub.wait_ready()
        return agent, hub

    yield make
    for session in sessions:
        await session.close(ErrorCode.CANCEL, "test over", grace=1)


async def read_all(stream: TunnelStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_request_response_round_trip(pair) -> None:
    _, hub = await pair()
    stream = await hub.open_stream(GET, {"user": "alice", "groups": ["dev"]})
    head = await stream.response()
    assert head.status == 200
    assert head.headers == (("x-echo", "1"),)
    assert head.metadata == {"path": "/api"}
    await stream.write_all(b"hello ")
    await stream.write_all(b"tunnel")
    stream.write_eof()
    assert await read_all(stream) == b"hello tunnel"
    await asyncio.wait_for(stream.wait_closed(), 2)
    assert hub.open_streams == 0


async def test_handler_sees_target_and_metadata(pair) -> None:
    seen: list[tuple[frames.Target, dict[str, object]]] = []

    async def record(stream: TunnelStream) -> None:
        seen.append((stream.target, stream.metadata))
        stream.send_headers(204)
        stream.write_eof()

    _, hub = await pair(record)
    stream = await hub.open_stream(frames.DialTarget("tcp", "127.0.0.1:8080"), {"user": "bob"})
    assert (await stream.response()).status == 204
    assert await read_all(stream) == b""
    assert seen == [(frames.DialTarget("tcp", "127.0.0.1:8080"), {"user": "bob"})]


async def test_many_concurrent_streams_keep_their_bytes_apart(pair) -> None:
    _, hub = await pair()

    async def one(i: int) -> bytes:
        stream = await hub.open_stream(GET)
        payload = bytes([i % 251]) * (1000 + i * 997)
        await stream.write_all(payload)
        stream.write_eof()
        got = await read_all(stream)
        assert got == payload
        return got

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert len(results) == 100


async def test_bulk_stream_larger_than_windows(pair) -> None:
    _, hub = await pair()
    stream = await hub.open_stream(GET)
    payload = random.Random(1).randbytes(3 * 1024 * 1024 + 17)

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            await stream.write_all(payload[i : i + 100_000])
        stream.write_eof()

    sender = asyncio.create_task(send())
    assert await read_all(stream) == payload
    await sender


async def test_stalled_reader_bounds_memory_and_does_not_block_others(pair) -> None:
    window = 64 * KiB
    settings = Settings(initial_stream_window=window)
    agent_streams: list[TunnelStream] = []
    release = asyncio.Event()

    async def handler(stream: TunnelStream) -> None:
        stream.send_headers(200)
        if isinstance(stream.target, frames.HttpRequestHead) and stream.target.path == "/bulk":
            agent_streams.append(stream)
            await release.wait()  # never reads until released
            await read_all(stream)
            stream.write_eof()
        else:
            await echo_body(stream)

    async def echo_body(stream: TunnelStream) -> None:
        async for chunk in stream:
            await stream.write_all(chunk)
        stream.write_eof()

    _, hub = await pair(handler, agent_settings=settings, high_water=32 * KiB)
    bulk = await hub.open_stream(frames.HttpRequestHead("PUT", "/bulk"))
    await bulk.response()
    writer_blocked = asyncio.Event()

    async def flood() -> None:
        for _ in range(1000):
            bulk.write(b"z" * 16 * KiB)
            drain = asyncio.ensure_future(bulk.drain())
            done, _ = await asyncio.wait({drain}, timeout=0.2)
            if not done:
                writer_blocked.set()
                await drain

    flooding = asyncio.create_task(flood())
    await asyncio.wait_for(writer_blocked.wait(), 5)
    # The stalled stream holds at most its window on the receiver and its high-water mark
    # (plus one write) on the sender.
    assert agent_streams[0].buffered <= window
    assert hub._conn.outbound_buffered(bulk.stream_id) <= 32 * KiB + 16 * KiB
    # Others still get through.
    for _ in range(20):
        other = await hub.open_stream(GET)
        await other.write_all(b"ping")
        other.write_eof()
        assert await asyncio.wait_for(read_all(other), 2) == b"ping"
    release.set()
    flooding.cancel()
    bulk.reset()


async def test_reset_reaches_the_other_side_with_its_code(pair) -> None:
    started = asyncio.Event()
    outcome: list[BaseException] = []

    async def handler(stream: TunnelStream) -> None:
        stream.send_headers(200)
        started.set()
        try:
            await stream.read()
        except StreamResetError as exc:
            outcome.append(exc)
            raise

    _, hub = await pair(handler)
    stream = await hub.open_stream(GET)
    await started.wait()
    stream.reset(ErrorCode.CANCEL, "client went away")
    for _ in range(100):
        if outcome:
            break
        await asyncio.sleep(0.01)
    assert isinstance(outcome[0], StreamResetError)
    assert outcome[0].code is ErrorCode.CANCEL
    assert outcome[0].remote
    with pytest.raises(StreamResetError):
        stream.write(b"x")


async def test_failing_handler_costs_one_stream_only(pair) -> None:
    async def handler(stream: TunnelStream) -> None:
        if isinstance(stream.target, frames.HttpRequestHead) and stream.target.path == "/boom":
            raise RuntimeError("bug")
        await echo(stream)

    _, hub = await pair(handler)
    bad = await hub.open_stream(frames.HttpRequestHead("GET", "/boom"))
    with pytest.raises(StreamResetError) as info:
        await bad.response()
    assert info.value.code is ErrorCode.INTERNAL_ERROR
    good = await hub.open_stream(GET)
    assert (await good.response()).status == 200


async def test_side_without_handler_refuses_streams(pair) -> None:
    agent, _ = await pair()
    stream = await agent.open_stream(GET)
    with pytest.raises(StreamResetError) as info:
        await stream.response()
    assert info.value.code is ErrorCode.REFUSED_STREAM


async def test_peer_death_fails_open_streams_at_once(pair) -> None:
    agent, hub = await pair(handler=lambda s: asyncio.sleep(3600))
    stream = await hub.open_stream(GET)
    await asyncio.sleep(0.01)
    await agent._transport.close()  # the agent's link drops without a GOAWAY
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(stream.response(), 2)
    await asyncio.wait_for(hub.wait_closed(), 2)
    with pytest.raises(SessionClosedError):
        await hub.open_stream(GET)


async def test_graceful_drain_lets_streams_in_flight_finish(pair) -> None:
    proceed = asyncio.Event()

    async def slow(stream: TunnelStream) -> None:
        stream.send_headers(200)
        await proceed.wait()
        await stream.write_all(b"done")
        stream.write_eof()

    agent, hub = await pair(slow)
    stream = await hub.open_stream(GET)
    await stream.response()
    closing = asyncio.create_task(hub.close(grace=5))
    await asyncio.sleep(0.05)
    assert hub.is_draining
    with pytest.raises(ConnectionClosedError):
        await hub.open_stream(GET)
    proceed.set()
    assert await read_all(stream) == b"done"
    stream.write_eof()
    await asyncio.wait_for(closing, 5)
    assert hub.close_code is ErrorCode.NO_ERROR
    await asyncio.wait_for(agent.wait_closed(), 5)
    assert agent.close_code is ErrorCode.NO_ERROR


async def test_keepalive_declares_a_silent_peer_dead() -> None:
    settings = Settings(keepalive_interval=0.05, keepalive_misses=3)
    a, b = memory_pair()
    hub = Session(b, Role.SERVER, settings=settings)
    hub.start()
    # The "agent" says HELLO and then goes silent (as a frozen process would).
    await a.send(codec.encode(frames.Hello(Settings().to_wire())))
    await asyncio.wait_for(hub.wait_closed(), 2)
    assert hub.close_code is ErrorCode.KEEPALIVE_TIMEOUT
    await a.close()


async def test_keepalive_keeps_a_quiet_but_alive_link() -> None:
    settings = Settings(keepalive_interval=0.02, keepalive_misses=2)
    a, b = memory_pair()
    async with (
        Session(a, Role.CLIENT, settings=settings) as agent,
        Session(b, Role.SERVER, settings=settings) as hub,
    ):
        await asyncio.sleep(0.3)
        assert not hub.is_closed
        assert not agent.is_closed


async def _raw_hub() -> tuple[MemoryTransport, Session]:
    a, b = memory_pair()
    hub = Session(b, Role.SERVER, name="hub")
    hub.start()
    await a.send(codec.encode(frames.Hello(Settings().to_wire())))
    return a, hub


async def _goaway_code(raw: MemoryTransport) -> int | None:
    """Read what the hub sent until its GOAWAY; return its code."""
    while True:
        message = await asyncio.wait_for(raw.receive(), 2)
        if message is None:
            return None
        assert isinstance(message, bytes)
        for frame in codec.decode_message(message, max_frame_size=Settings().max_frame_size):
            if isinstance(frame, frames.GoAway):
                return frame.code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\xc1", ErrorCode.PROTOCOL_ERROR),  # never-used msgpack byte
        (msgpack.packb([42, 0]), ErrorCode.PROTOCOL_ERROR),  # unknown frame type
        (msgpack.packb([3, 2, "text not bytes"]), ErrorCode.PROTOCOL_ERROR),
        (msgpack.packb([3, 1, b"x" * (64 * KiB + 1)]), ErrorCode.FRAME_SIZE_ERROR),
        (codec.encode(frames.Hello(Settings().to_wire())), ErrorCode.PROTOCOL_ERROR),
    ],
)
async def test_session_level_faults_send_goaway_and_close(message: bytes, code: int) -> None:
    raw, hub = await _raw_hub()
    await raw.send(message)
    assert await _goaway_code(raw) == code
    await asyncio.wait_for(hub.wait_closed(), 2)
    assert hub.close_code == code


async def test_text_message_ends_the_session() -> None:
    raw, hub = await _raw_hub()
    await raw.send_text("hello?")
    assert await _goaway_code(raw) == ErrorCode.PROTOCOL_ERROR
    await asyncio.wait_for(hub.wait_closed(), 2)


async def test_stream_level_fault_resets_only_that_stream(pair) -> None:
    raw, hub = await _raw_hub()
    # DATA for a stream that was never opened: that stream is reset, the session lives on.
    await raw.send(codec.encode(frames.Data(7, b"x")))
    message = await asyncio.wait_for(raw.receive(), 2)
    assert isinstance(message, bytes)
    sent = codec.decode_message(message, max_frame_size=Settings().max_frame_size)
    assert any(isinstance(f, frames.Reset) and f.stream_id == 7 for f in sent)
    assert not hub.is_closed
    await hub.close(grace=1)


async def test_fuzzed_frames_never_crash_and_other_sessions_live(pair) -> None:
    """Random and mutated frames against live sessions: each one either survives or ends with
    a GOAWAY, never with an exception; an unrelated session keeps working throughout."""
    _, healthy = await pair()
    rng = random.Random(2026)
    valid = [
        codec.encode(frames.Open(1, GET, {"user": "x"})),
        codec.encode(frames.Data(1, b"abc")),
        codec.encode(frames.WindowUpdate(0, 10)),
        codec.encode(frames.End(1)),
        codec.encode(frames.Reset(1, 7, "r")),
        codec.encode(frames.Ping(1)),
        codec.encode(frames.GoAway(0, 0, "")),
    ]

    async def discard(raw: MemoryTransport) -> None:
        while await raw.receive() is not None:
            pass

    for round_ in range(30):
        raw, victim = await _raw_hub()
        drainer = asyncio.create_task(discard(raw))
        for _ in range(40):
            base = bytearray(rng.choice(valid))
            for _ in range(rng.randint(0, 3)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            if rng.random() < 0.2:
                base = bytearray(rng.randbytes(rng.randint(1, 50)))
            if victim.is_closed:
                break
            await raw.send(bytes(base))
        await victim.close(ErrorCode.CANCEL, "fuzz round over", grace=1)
        await raw.close()
        await drainer
        probe = await healthy.open_stream(GET)
        await probe.write_all(str(round_).encode())
        probe.write_eof()
        assert await asyncio.wait_for(read_all(probe), 2) == str(round_).encode()


# ---------------------------------------------------------------------- writing without a hop


async def test_a_request_and_its_answer_need_no_writer_task_pass(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What one loop iteration queues goes out as one message from a ``call_soon`` flush: the
    OPEN with its END, the answer's HEADERS, DATA and END; the writer task stays asleep."""

    async def answer(stream: TunnelStream) -> None:
        stream.send_headers(200, (("content-type", "text/plain"),))
        stream.write(b"small body")
        stream.write_eof()

    agent, hub = await pair(answer)
    await asyncio.sleep(0.05)  # the HELLOs are out
    wakeups = 0
    real_set = _WriterSignal.set

    def counting_set(signal: _WriterSignal) -> None:
        nonlocal wakeups
        wakeups += 1
        real_set(signal)

    monkeypatch.setattr(_WriterSignal, "set", counting_set)
    sent = hub.stats.messages_out, agent.stats.messages_out
    for _ in range(5):
        stream = await hub.open_stream(GET)
        stream.write_eof()
        head = await stream.response()
        assert head.status == 200
        assert await read_all(stream) == b"small body"
    assert wakeups == 0
    assert hub.stats.messages_out - sent[0] == 5  # OPEN + END: one message per request
    assert agent.stats.messages_out - sent[1] == 5  # HEADERS + DATA + END: one per answer


async def test_a_congested_transport_hands_the_flush_to_the_writer_in_order() -> None:
    """A transport that cannot take a message at once gets it from the writer task (which
    awaits the room), before anything queued later: the order on the wire is kept."""
    a, b = memory_pair(depth=1)
    hub = Session(b, Role.SERVER, name="hub")
    hub.start()
    await a.send(codec.encode(frames.Hello(Settings().to_wire())))
    await asyncio.sleep(0.05)  # HELLO in, our HELLO out and sitting in the one slot
    first = await hub.open_stream(GET)
    await asyncio.sleep(0.01)  # the flush found no room: the writer holds the OPEN
    second = await hub.open_stream(GET)
    received: list[frames.Frame] = []
    while len([f for f in received if isinstance(f, frames.Open)]) < 2:
        message = await asyncio.wait_for(a.receive(), 2)
        assert isinstance(message, bytes)
        received.extend(codec.decode_message(message, max_frame_size=1 << 20))
    opens = [f.stream_id for f in received if isinstance(f, frames.Open)]
    assert isinstance(received[0], frames.Hello)
    assert opens == [first.stream_id, second.stream_id]
    await hub.close(ErrorCode.CANCEL, "test over", grace=1)


async def test_a_failed_flush_ends_the_session_and_its_streams() -> None:
    a, b = memory_pair()
    hub = Session(b, Role.SERVER, name="hub")
    hub.start()
    await a.send(codec.encode(frames.Hello(Settings().to_wire())))
    await hub.wait_ready()
    stream = await hub.open_stream(GET)
    b._outgoing.close()  # the link breaks under the flush
    await asyncio.wait_for(hub.wait_closed(), 2)
    assert hub.close_code is ErrorCode.INTERNAL_ERROR
    with pytest.raises(StreamResetError):
        await stream.response()


async def test_ending_the_only_stream_sends_at_once_others_wait_for_the_iteration(pair) -> None:
    async def never_answer(stream: TunnelStream) -> None:
        await asyncio.sleep(10)

    _, hub = await pair(never_answer)
    await asyncio.sleep(0.05)
    sent = hub.stats.messages_out
    lone = await hub.open_stream(GET)
    lone.write_eof()
    assert hub.stats.messages_out == sent + 1  # OPEN + END went out in write_eof itself
    first = await hub.open_stream(GET)
    second = await hub.open_stream(GET)
    first.write_eof()
    second.write_eof()
    assert hub.stats.messages_out == sent + 1  # several streams in flight: batched...
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert hub.stats.messages_out == sent + 2  # ...into one message at the iteration's end
