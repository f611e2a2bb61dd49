"""Take over an aiohttp server connection after answering 101, to relay raw bytes.

aiohttp's server speaks websocket itself but has no public way to hand an upgraded connection
to the application as a byte stream. It does let a response install a payload parser on the
connection (that is how its own websockets read frames), so we install one that passes every
byte through to a queue. This is the only place that touches that seam; the hijack tests fail
if aiohttp changes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from aiohttp import web

#: Unread bytes from the client before the connection stops reading (TCP backpressure).
_HIGH_WATER = 256 * 1024


class _RawParser:
    """Receives the connection's bytes in place of an HTTP payload parser, and buffers them
    for :meth:`UpgradedConnection.read`, pausing the socket while too much is unread."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._readable = asyncio.Event()
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._readable.set()
            if self._size > _HIGH_WATER and not self._paused:
                self._paused = True
                self._transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._readable.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            self._transport.resume_reading()
        return data


class UpgradedConnection:
    """The client side of an upgraded request: read raw bytes, write raw bytes."""

    def __init__(
        self, request: web.Request, response: web.StreamResponse, parser: _RawParser
    ) -> None:
        self._request = request
        self._response = response
        self._parser = parser

    @property
    def response(self) -> web.StreamResponse:
        """The 101 response; the handler returns it so aiohttp sends nothing more."""
        return self._response

    async def read(self) -> bytes:
        """Whatever the client sent since the last read; b"" once it closed its side."""
        return await self._parser.read()

    async def write(self, data: bytes) -> None:
        await self._response.write(data)

    def close(self) -> None:
        transport = self._request.transport
        if transport is not None:
            transport.close()


async def switch_protocols(
    request: web.Request, headers: Iterable[tuple[str, str]]
) -> UpgradedConnection:
    """Send ``101 Switching Protocols`` with ``headers`` and return the raw connection.

    The raw parser is installed before the 101 leaves, so no byte the client sends after it can
    be mistaken for a new HTTP request.
    """
    protocol = request.protocol
    transport = request.transport
    if transport is None:  # pragma: no cover - the client is already gone
        raise ConnectionResetError("the client closed the connection")
    parser = _RawParser(transport)
    # aiohttp types the parser as its websocket reader; any object with feed_data/feed_eof works.
    protocol.set_parser(parser)  # type: ignore[arg-type]
    response = web.StreamResponse(status=101)
    for name, value in headers:
        response.headers.add(name, value)
    response.force_close()
    await response.prepare(request)
    return UpgradedConnection(request, response, parser)
