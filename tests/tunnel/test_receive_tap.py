"""Binary websocket messages delivered from aiohttp's receive callback, without the reader
task: what goes to the sink, what still goes through ``ws.receive()``, and when the tap
stays out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.streams import TunnelStream
from clusternet_aa.tunnel.transport import DELIVERED, TEXT, WebSocketTransport, frame_header
from tests.tunnel.ws_helpers import serve, websocket_pair

MAX = 64 * 1024
ZERO_MASK = b"\0\0\0\0"  # masking with a zero key leaves the payload as it is


@pytest.fixture
async def ws_pair() -> AsyncIterator[tuple[WebSocketTransport, WebSocketTransport]]:
    """A real aiohttp websocket on 127.0.0.1: (client transport, server transport)."""
    async with websocket_pair(MAX) as pair:
        yield pair


def raw_frames(*payloads: bytes) -> bytes:
    """Client frames (masked with a zero key) for one transport write."""
    return b"".join(frame_header(len(p), ZERO_MASK) + p for p in payloads)


async def until(condition: object, what: str) -> None:
    for _ in range(200):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_binary_messages_go_to_the_sink_and_the_rest_to_receive(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    got: list[bytes] = []
    assert server.deliver_to(lambda message: got.append(message) or True)
    receive = asyncio.ensure_future(server.receive())
    await asyncio.sleep(0.01)  # parked
    for payload in (b"one", b"two", bytes(3000)):
        await client.send(bytearray(payload))
    await until(lambda: len(got) == 3, "three deliveries")
    assert got == [b"one", b"two", bytes(3000)]
    assert not receive.done()  # the reader was never woken for them
    await client._ws.send_str("not binary")
    assert await asyncio.wait_for(receive, 2) is TEXT
    await client.send(b"after")  # parks again, delivers again
    receive = asyncio.ensure_future(server.receive())
    await until(lambda: len(got) == 4, "a delivery after the fallback")
    assert got[-1] == b"after"
    await client.close()
    assert await asyncio.wait_for(receive, 2) is None


async def test_a_sink_that_stops_leaves_the_next_messages_to_receive(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    got: list[bytes] = []

    def sink(message: bytes) -> bool:
        got.append(message)
        return False  # as over the control backlog bound

    assert server.deliver_to(sink)
    receive = asyncio.ensure_future(server.receive())
    await asyncio.sleep(0.01)
    client._ws._writer.transport.write(raw_frames(b"first", b"second"))  # type: ignore[union-attr]
    assert await asyncio.wait_for(receive, 2) is DELIVERED
    assert got == [b"first"]
    # Still queued in aiohttp: receive() does not park over it, it returns it.
    assert await asyncio.wait_for(server.receive(), 2) == b"second"
    assert got == [b"first"]


async def test_an_oversized_message_ends_receive(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    assert server.deliver_to(lambda message: True)
    receive = asyncio.ensure_future(server.receive())
    await asyncio.sleep(0.01)
    await client.send(bytes(MAX + 1))
    assert await asyncio.wait_for(receive, 2) is None  # as from ws.receive() without the tap
    assert server._ws.closed


async def test_a_sink_failure_is_raised_by_receive(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair

    def sink(message: bytes) -> bool:
        raise ValueError("bad message")

    assert server.deliver_to(sink)
    receive = asyncio.ensure_future(server.receive())
    await asyncio.sleep(0.01)
    await client.send(b"x")
    with pytest.raises(ValueError, match="bad message"):
        await asyncio.wait_for(receive, 2)


async def test_closing_our_side_releases_a_parked_receive(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    assert client.deliver_to(lambda message: True)
    receive = asyncio.ensure_future(client.receive())
    peer = asyncio.ensure_future(server.receive())  # answers our close frame
    await asyncio.sleep(0.01)
    await asyncio.wait_for(client.close(), 5)
    assert await asyncio.wait_for(receive, 2) is None
    assert await asyncio.wait_for(peer, 2) is None


async def test_no_tap_where_aiohttp_reads_the_queue_on_its_own() -> None:
    """A heartbeat (or a receive timeout) makes aiohttp feed the queue outside the parser: the
    transport keeps the plain ws.receive() path."""
    done = asyncio.Event()
    verdict: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        transport = WebSocketTransport(ws)
        verdict.set_result(transport.deliver_to(lambda message: True))
        assert await transport.receive() == b"plain"
        done.set()
        await ws.close()
        return ws

    async with serve(handler) as url, aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_receive=30))
        assert WebSocketTransport(ws).deliver_to(lambda message: True) is False
        assert await verdict is False
        await ws.send_bytes(b"plain")
        await asyncio.wait_for(done.wait(), 2)
        await ws.close()


async def test_sessions_over_a_websocket_skip_the_reader_task(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    calls = 0
    real_receive = server._ws.receive

    async def counting_receive(*args: object, **kwargs: object) -> aiohttp.WSMessage:
        nonlocal calls
        calls += 1
        return await real_receive()

    server._ws.receive = counting_receive  # type: ignore[method-assign]

    async def answer(stream: TunnelStream) -> None:
        stream.send_headers(200, (("content-type", "text/plain"),))
        stream.write(b"hi")
        stream.write_eof()

    agent = Session(client, Role.CLIENT, handler=answer, name="agent")
    hub = Session(server, Role.SERVER, name="hub")
    agent.start()
    hub.start()
    await hub.wait_ready()
    for _ in range(20):
        stream = await hub.open_stream(frames.HttpRequestHead("GET", "/", ()))
        stream.write_eof()
        assert (await stream.response()).status == 200
        assert await stream.read() == b"hi"
    assert calls <= 1  # at most the HELLO, if it came before the reader parked
    await agent.close(ErrorCode.CANCEL, "test over", grace=1)
    # The peer's close reaches the parked hub reader through ws.receive().
    await asyncio.wait_for(hub.wait_closed(), 2)
    assert hub.close_code is ErrorCode.CANCEL
