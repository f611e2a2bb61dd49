"""Message transports under a tunnel session: an aiohttp websocket, or an in-memory pair.

A transport moves whole messages. The session needs only three operations, so tests can run a
real session over :func:`memory_pair` without sockets, and production runs it over a websocket.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
from aiohttp import web

#: What ``receive`` returns when the peer sent a text message (a protocol violation).
TEXT = "text"


class Transport(Protocol):
    async def send(self, message: bytes) -> None:
        """Send one binary message; waits while the link is congested (backpressure)."""

    async def receive(self) -> bytes | str | None:
        """The next message: bytes, :data:`TEXT` for a text message, None once closed."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the link; safe to call more than once."""


class WebSocketTransport:
    """A transport over an aiohttp websocket, server side or client side."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, message: bytes) -> None:
        await self._ws.send_bytes(message)

    async def receive(self) -> bytes | str | None:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.TEXT:
            return TEXT
        # CLOSE, CLOSING, CLOSED, ERROR (including a message over max_msg_size).
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode()[:120])


class _Direction:
    """One direction of an in-memory link: a queue, ``depth`` slots of capacity, a closed flag.

    A ``None`` in the queue marks the end; it never needs a free slot, so closing never blocks.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.slots = asyncio.Semaphore(depth)
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            for _ in range(self.depth):
                self.slots.release()


class MemoryTransport:
    """One end of an in-memory link with the same backpressure as a socket."""

    def __init__(self, incoming: _Direction, outgoing: _Direction) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    async def _put(self, message: bytes | str) -> None:
        if self._outgoing.closed:
            raise ConnectionResetError("memory transport is closed")
        await self._outgoing.slots.acquire()
        if self._outgoing.closed:
            raise ConnectionResetError("memory transport is closed")
        self._outgoing.queue.put_nowait(message)

    async def send(self, message: bytes) -> None:
        await self._put(message)

    async def send_text(self, text: str) -> None:
        """Send a text message (tests use it to check that the peer rejects it)."""
        await self._put(text)

    async def receive(self) -> bytes | str | None:
        message = await self._incoming.queue.get()
        if message is None:
            self._incoming.queue.put_nowait(None)  # later calls see the end too
            return None
        self._incoming.slots.release()
        return TEXT if isinstance(message, str) else message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._outgoing.close()
        self._incoming.close()


def memory_pair(depth: int = 64) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports; ``depth`` messages may be in flight each way."""
    a_to_b, b_to_a = _Direction(depth), _Direction(depth)
    return MemoryTransport(b_to_a, a_to_b), MemoryTransport(a_to_b, b_to_a)
