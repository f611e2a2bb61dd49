"""Sessions over real TLS websockets on 127.0.0.1, with raw dial streams relayed to sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import trustme
from aiohttp import web

from clusternet_aa.proxy.dialer import Dialer, allow_addresses, split_address
from clusternet_aa.proxy.local_forward import serve_forward
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.streams import StreamResetError
from clusternet_aa.tunnel.websocket import HandshakeError, accept, connect, offered_subprotocol


@dataclass
class Hub:
    url: str
    client_ssl: ssl.SSLContext
    sessions: list[Session] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    state = Hub("", client_ssl)

    async def tunnel(request: web.Request) -> web.StreamResponse:
        if offered_subprotocol(request) is None:
            return web.Response(status=400, text="no tunnel subprotocol offered")
        ws, session = await accept(request, name="hub")
        session.start()
        state.sessions.append(session)
        state.arrived.set()
        await session.wait_closed()
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", tunnel)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"wss://127.0.0.1:{port}/tunnel"
    yield state
    for session in state.sessions:
        await session.close(ErrorCode.CANCEL, grace=1)
    await runner.cleanup()


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_dial_stream_round_trip_over_tls(hub: Hub, echo_server: str) -> None:
    async with aiohttp.ClientSession() as client:
        agent = await connect(
            client,
            hub.url,
            ssl_context=hub.client_ssl,
            handler=Dialer(allow_addresses([echo_server])),
            name="agent",
        )
        await asyncio.wait_for(hub.arrived.wait(), 5)
        session = hub.sessions[0]
        stream = await session.open_stream(frames.DialTarget("tcp", echo_server))
        assert (await stream.response()).status == 200
        payload = bytes(range(256)) * 4096  # 1 MiB
        await stream.write_all(payload)
        stream.write_eof()
        assert await stream.readexactly(len(payload)) == payload
        assert await stream.read() == b""
        await agent.close(grace=2)
        await asyncio.wait_for(session.wait_closed(), 5)
        assert agent.close_code is ErrorCode.NO_ERROR


async def test_dial_outside_the_allow_list_is_refused(hub: Hub, echo_server: str) -> None:
    async with aiohttp.ClientSession() as client:
        agent = await connect(
            client, hub.url, ssl_context=hub.client_ssl, handler=Dialer(allow_addresses([]))
        )
        await asyncio.wait_for(hub.arrived.wait(), 5)
        stream = await hub.sessions[0].open_stream(frames.DialTarget("tcp", echo_server))
        with pytest.raises(StreamResetError) as info:
            await stream.response()
        assert info.value.code is ErrorCode.FORBIDDEN
        await agent.close(grace=1)


async def test_dial_to_a_closed_port_fails_with_dial_failed(hub: Hub) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed = f"127.0.0.1:{probe.sockets[0].getsockname()[1]}"
    probe.close()
    await probe.wait_closed()
    async with aiohttp.ClientSession() as client:
        agent = await connect(
            client, hub.url, ssl_context=hub.client_ssl, handler=Dialer(allow_addresses([closed]))
        )
        await asyncio.wait_for(hub.arrived.wait(), 5)
        stream = await hub.sessions[0].open_stream(frames.DialTarget("tcp", closed))
        with pytest.raises(StreamResetError) as info:
            await stream.response()
        assert info.value.code is ErrorCode.DIAL_FAILED
        await agent.close(grace=1)


async def test_local_forward_relays_a_tcp_connection(hub: Hub, echo_server: str) -> None:
    async with aiohttp.ClientSession() as client:
        agent = await connect(
            client,
            hub.url,
            ssl_context=hub.client_ssl,
            handler=Dialer(allow_addresses([echo_server])),
        )
        await asyncio.wait_for(hub.arrived.wait(), 5)
        server = await serve_forward(lambda: hub.sessions[0], frames.DialTarget("tcp", echo_server))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"through the tunnel")
        writer.write_eof()
        assert await reader.read() == b"through the tunnel"
        writer.close()
        server.close()
        await server.wait_closed()
        await agent.close(grace=1)


async def test_client_without_the_subprotocol_is_refused_before_upgrade(hub: Hub) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(hub.url, ssl=hub.client_ssl)
        assert info.value.status == 400


async def test_refused_upgrade_raises_handshake_error(hub: Hub) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(HandshakeError) as info:
            await connect(
                client, hub.url.replace("/tunnel", "/nowhere"), ssl_context=hub.client_ssl
            )
        assert info.value.status == 404


def test_split_address() -> None:
    assert split_address("10.0.0.1:443") == ("10.0.0.1", 443)
    assert split_address("[::1]:8080") == ("::1", 8080)
    for bad in ("nohost", ":80", "host:", "host:0", "host:70000", "host:x"):
        with pytest.raises(ValueError, match="bad address"):
            split_address(bad)
