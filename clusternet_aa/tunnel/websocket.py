"""Tunnel sessions over aiohttp websockets: the hub accepts, the agent dials.

The websocket subprotocol selects the tunnel version (``clusternet.tunnel.v1``); the HELLO
exchange then carries the settings. A client that offers no version we speak is refused before
the upgrade, with a plain HTTP error, so it learns why.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode, TunnelError
from clusternet_aa.tunnel.protocol.settings import FRAME_OVERHEAD, SUBPROTOCOLS, Settings
from clusternet_aa.tunnel.session import Session, StreamHandler
from clusternet_aa.tunnel.transport import WebSocketTransport

#: Subprotocol names we accept, newest first.
ACCEPTED_SUBPROTOCOLS = tuple(SUBPROTOCOLS[v] for v in sorted(SUBPROTOCOLS, reverse=True))


class HandshakeError(TunnelError):
    """The websocket upgrade was refused; ``status`` is the server's HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, ErrorCode.PROTOCOL_ERROR)
        self.status = status


def offered_subprotocol(request: web.BaseRequest) -> str | None:
    """The best tunnel subprotocol the client offers, or None."""
    offered = {
        item.strip()
        for header in request.headers.getall("Sec-WebSocket-Protocol", [])
        for item in header.split(",")
    }
    return next((name for name in ACCEPTED_SUBPROTOCOLS if name in offered), None)


def _max_message(settings: Settings) -> int:
    # aiohttp rejects larger messages itself (closing with 1009) before we see them.
    return settings.max_message_size + FRAME_OVERHEAD


async def accept(
    request: web.BaseRequest,
    *,
    settings: Settings | None = None,
    handler: StreamHandler | None = None,
    name: str = "",
) -> tuple[web.WebSocketResponse, Session]:
    """Upgrade ``request`` and return the server side of a session (not yet started).

    The caller must have checked :func:`offered_subprotocol` first.
    """
    settings = settings or Settings()
    ws = web.WebSocketResponse(
        protocols=ACCEPTED_SUBPROTOCOLS,
        max_msg_size=_max_message(settings),
        compress=False,
        autoping=True,
        heartbeat=None,
    )
    await ws.prepare(request)
    session = Session(
        WebSocketTransport(ws), Role.SERVER, settings=settings, handler=handler, name=name
    )
    return ws, session


async def connect(
    client: aiohttp.ClientSession,
    url: str,
    *,
    ssl_context: ssl.SSLContext | bool = True,
    headers: Mapping[str, str] | None = None,
    settings: Settings | None = None,
    handler: StreamHandler | None = None,
    name: str = "",
    handshake_timeout: float = 10.0,
) -> Session:
    """Dial ``url`` and return the client side of a started session.

    Raises :class:`HandshakeError` (with the HTTP status) when the server refuses the upgrade;
    network errors surface as :class:`aiohttp.ClientError` or :class:`OSError`.
    """
    settings = settings or Settings()
    try:
        ws = await client.ws_connect(
            url,
            protocols=ACCEPTED_SUBPROTOCOLS,
            ssl=ssl_context,
            headers=headers,
            max_msg_size=_max_message(settings),
            compress=0,
            autoping=True,
            heartbeat=None,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=handshake_timeout),
        )
    except aiohttp.WSServerHandshakeError as exc:
        raise HandshakeError(
            f"tunnel upgrade refused: {exc.status} {exc.message}", exc.status
        ) from exc
    if ws.protocol not in ACCEPTED_SUBPROTOCOLS:
        await ws.close(code=1002, message=b"no tunnel subprotocol agreed")
        raise HandshakeError("the server agreed no tunnel subprotocol", 400)
    session = Session(
        WebSocketTransport(ws), Role.CLIENT, settings=settings, handler=handler, name=name
    )
    session.start()
    return session
