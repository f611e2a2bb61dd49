"""The session's per-request shortcuts: a direct flush cancels the pending one, events of a
request are dispatched by exact type, a draining session keeps taking messages from the
transport's callback, and the websocket transport keeps aiohttp's writer once checked."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import memory_pair
from tests.tunnel.ws_helpers import websocket_pair

GET = frames.HttpRequestHead("GET", "/api", (("accept", "application/json"),))


async def answer(stream: TunnelStream) -> None:
    stream.send_headers(200, (("content-type", "text/plain"),), {"n": 2})
    stream.write(b"ok")
    stream.write_eof()


async def started_pair() -> tuple[Session, Session]:
    a, b = memory_pair()
    agent = Session(a, Role.CLIENT, handler=answer, name="agent")
    hub = Session(b, Role.SERVER, name="hub")
    agent.start()
    hub.start()
    await hub.wait_ready()
    await agent.wait_ready()
    return agent, hub


async def test_a_direct_flush_cancels_the_pending_one() -> None:
    agent, hub = await started_pair()
    try:
        stream = await hub.open_stream(GET, {"k": "v"})
        handle = hub._flush_handle
        assert handle is not None  # the OPEN alone waits for the end of the iteration
        stream.write_eof()
        assert hub._flush_handle is None
        assert handle.cancelled()  # OPEN and END went out in write_eof itself
        head = await stream.take_response()
        assert (head.status, head.headers, head.metadata) == (
            200,
            (("content-type", "text/plain"),),
            {"n": 2},
        )
        assert await stream.read() == b"ok"
        assert await stream.read() == b""
        await stream.wait_closed()
        assert hub.open_streams == 0
    finally:
        await hub.close(ErrorCode.CANCEL, "test over", grace=1)
        await agent.close(ErrorCode.CANCEL, "test over", grace=1)


async def test_a_flush_left_pending_still_sends() -> None:
    agent, hub = await started_pair()
    try:
        stream = await hub.open_stream(GET)
        await asyncio.sleep(0)  # the pending flush sends the OPEN on its own
        assert hub._flush_handle is None
        stream.write_eof()
        assert (await stream.response()).status == 200
        assert await stream.read() == b"ok"
    finally:
        await hub.close(ErrorCode.CANCEL, "test over", grace=1)
        await agent.close(ErrorCode.CANCEL, "test over", grace=1)


async def test_a_draining_session_keeps_taking_messages() -> None:
    agent, hub = await started_pair()
    try:
        hub._finishing = True  # as close() sets it while streams drain
        assert hub._on_message(codec.encode(frames.Ping(7))) is True  # keep delivering
        assert hub._wakeup._flag  # the PONG goes through the writer task
    finally:
        hub._finishing = False
        await hub.close(ErrorCode.CANCEL, "test over", grace=1)
        await agent.close(ErrorCode.CANCEL, "test over", grace=1)


async def test_a_reset_and_the_end_go_through_the_general_dispatch() -> None:
    async def refuse(stream: TunnelStream) -> None:
        stream.reset(ErrorCode.REFUSED_STREAM, "not here")

    a, b = memory_pair()
    agent = Session(a, Role.CLIENT, handler=refuse, name="agent")
    hub = Session(b, Role.SERVER, name="hub")
    agent.start()
    hub.start()
    try:
        await hub.wait_ready()
        stream = await hub.open_stream(GET)
        stream.write_eof()
        with pytest.raises(StreamResetError) as caught:
            await stream.take_response()
        assert caught.value.code is ErrorCode.REFUSED_STREAM
        assert caught.value.remote is True
    finally:
        await agent.close(ErrorCode.INTERNAL_ERROR, "bye", grace=1)
    await hub.wait_closed()
    assert hub.close_code is ErrorCode.INTERNAL_ERROR


async def test_the_websocket_writer_is_checked_once_and_closing_still_raises() -> None:
    async with websocket_pair(1 << 20) as (client, server):
        writers = [client._writer]
        assert client.send_nowait(bytearray(b"x" * 200)) is True
        writers.append(client._writer)
        assert writers[0] is None  # checked and kept by the first send
        writer = writers[1]
        assert writer is not None
        assert client.send_nowait(b"y") is True
        assert client._writer is writer
        received = [await server.receive(), await server.receive()]
        assert received == [b"x" * 200, b"y"]
        # The server reads the close, so that aiohttp answers it and the client's close returns.
        closed = await asyncio.gather(client.close(), server.receive())
        assert closed[1] is None
        with pytest.raises(aiohttp.ClientConnectionResetError):
            client.send_nowait(b"late")
