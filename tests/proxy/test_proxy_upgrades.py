"""Upgrades through the hub: websocket and SPDY-style raw upgrades relayed byte for byte, with
close codes intact, and refused upgrades passed back with their status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from clusternet_aa.proxy.dialer import allow_addresses
from tests.proxy.conftest import ProxyWorld


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    """An HTTP server behind the agent: a websocket echo, a raw upgrade echo, a refusal."""

    async def ws_echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.BINARY:
                if message.data == b"bye":
                    await ws.close(code=4001, message=b"custom close")
                    break
                await ws.send_bytes(message.data[::-1])
        return ws

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": "no",
                "reason": "Forbidden",
                "code": 403,
            },
            status=403,
        )

    async def not_switched(request: web.Request) -> web.Response:
        return web.Response(status=200, text="plain answer to an upgrade")

    async def raw_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"upgrade: spdy/3.1" in head.lower()
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.write_eof()
        writer.close()

    app = web.Application()
    app.router.add_get("/ws", ws_echo)
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/plain", not_switched)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    raw = await asyncio.start_server(raw_echo, "127.0.0.1", 0)
    raw_port = raw.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}|127.0.0.1:{raw_port}"
    raw.close()
    await runner.cleanup()


def _url(world: ProxyWorld, address: str, path: str) -> str:
    return world.proxy_url().replace("/proxy/direct", f"/proxy/http/{address}") + path


async def _agent(world: ProxyWorld, backend: str) -> tuple[str, str]:
    web_address, raw_address = backend.split("|")
    await world.connect_agent(dial_policy=allow_addresses([web_address, raw_address]))
    return web_address, raw_address


async def test_websocket_is_relayed_with_its_subprotocol_and_close_code(
    world: ProxyWorld, backend: str
) -> None:
    web_address, _ = await _agent(world, backend)
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(
            _url(world, web_address, "/ws"),
            protocols=("v5.channel.k8s.io",),
            headers={"Authorization": "Bearer alice-token"},
            ssl=world.client_ssl,
        )
        assert ws.protocol == "v5.channel.k8s.io"
        for payload in (b"\x01hello", bytes(range(256)) * 300):
            await ws.send_bytes(payload)
            message = await asyncio.wait_for(ws.receive(), 5)
            assert message.data == payload[::-1]
        await ws.send_bytes(b"bye")
        closing = await asyncio.wait_for(ws.receive(), 5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert closing.data == 4001
        assert closing.extra == "custom close"
        await ws.close()


async def test_raw_spdy_style_upgrade_is_relayed_byte_for_byte(
    world: ProxyWorld, backend: str
) -> None:
    _, raw_address = await _agent(world, backend)
    url = aiohttp.client.URL(_url(world, raw_address, "/exec"))
    reader, writer = await asyncio.open_connection(url.host, url.port, ssl=world.client_ssl)
    writer.write(
        f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {url.raw_authority}\r\n"
        "Authorization: Bearer alice-token\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"upgrade: spdy/3.1" in head.lower()
    payload = bytes(range(97, 123)) * 10000
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    assert got == payload.upper()
    writer.close()  # TLS in asyncio cannot half-close; closing ends the relay both ways
    await writer.wait_closed()


async def test_refused_upgrade_passes_the_childs_status(world: ProxyWorld, backend: str) -> None:
    web_address, _ = await _agent(world, backend)
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(
                _url(world, web_address, "/refuse"),
                headers={"Authorization": "Bearer alice-token"},
                ssl=world.client_ssl,
            )
        assert info.value.status == 403


async def test_upgrade_answered_without_101_is_a_503(world: ProxyWorld, backend: str) -> None:
    web_address, _ = await _agent(world, backend)
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(
                _url(world, web_address, "/plain"),
                headers={"Authorization": "Bearer alice-token"},
                ssl=world.client_ssl,
            )
        assert info.value.status == 503


async def test_agent_death_mid_upgrade_fails_the_client_at_once(
    world: ProxyWorld, backend: str
) -> None:
    web_address, _ = await _agent(world, backend)
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(
            _url(world, web_address, "/ws"),
            headers={"Authorization": "Bearer alice-token"},
            ssl=world.client_ssl,
        )
        await world.agent_sessions[0].close(grace=0.1)
        message = await asyncio.wait_for(ws.receive(), 5)
        assert message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        )
        assert ws.close_code != 1000
        await ws.close()
