"""A real aiohttp websocket on 127.0.0.1, for the tests of the tunnel's IO layer (the
transport's send path and its receive tap): both ends as :class:`WebSocketTransport`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from clusternet_aa.tunnel.transport import WebSocketTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` at ``/ws`` on an ephemeral port; yields the URL to connect to."""
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def websocket_pair(
    max_msg_size: int,
) -> AsyncIterator[tuple[WebSocketTransport, WebSocketTransport]]:
    """A connected websocket: (client transport, server transport)."""
    server_side: asyncio.Future[WebSocketTransport] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=max_msg_size)
        await ws.prepare(request)
        server_side.set_result(WebSocketTransport(ws))
        await done.wait()
        await ws.close()
        return ws

    async with serve(handler) as url, aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url, max_msg_size=max_msg_size)
        try:
            yield WebSocketTransport(ws), await server_side
        finally:
            done.set()
            await ws.close()
