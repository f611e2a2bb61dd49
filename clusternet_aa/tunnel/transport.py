"""Message transports under a tunnel session: an aiohttp websocket, or an in-memory pair.

A transport moves whole messages. The session needs only three operations, so tests can run a
real session over :func:`memory_pair` without sockets, and production runs it over a websocket.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp._websocket.helpers import websocket_mask
from aiohttp.http_websocket import WebSocketWriter

#: What ``receive`` returns when the peer sent a text message (a protocol violation).
TEXT = "text"

#: A message to send. The transport takes ownership: a bytearray may be masked in place.
Message = bytes | bytearray

_FIN_BINARY = 0x82
_MASK_BIT = 0x80
_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack


class Transport(Protocol):
    def send_nowait(self, message: Message) -> bool:
        """Send one binary message at once if the link can take it without waiting.

        True: the message is written (and owned by the transport, as with :meth:`send`).
        False: nothing was done (the link is congested, or this transport cannot write
        synchronously): use :meth:`send`. Raises like :meth:`send` when the link is closing."""

    async def send(self, message: Message) -> None:
        """Send one binary message; waits while the link is congested (backpressure).

        The transport owns ``message`` from then on (a bytearray may be masked in place), so
        the caller must not reuse it."""

    async def receive(self) -> bytes | str | None:
        """The next message: bytes, :data:`TEXT` for a text message, None once closed."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the link; safe to call more than once."""


def frame_header(size: int, mask: bytes | None) -> bytes:
    """The RFC 6455 header of one unfragmented binary frame of ``size`` payload bytes, with
    the masking key appended when ``mask`` is given (a client must mask, a server must not)."""
    mask_bit = _MASK_BIT if mask is not None else 0
    if size < 126:
        header = _PACK_LEN1(_FIN_BINARY, size | mask_bit)
    elif size < 0x10000:
        header = _PACK_LEN2(_FIN_BINARY, 126 | mask_bit, size)
    else:
        header = _PACK_LEN3(_FIN_BINARY, 127 | mask_bit, size)
    return header + mask if mask is not None else header


class WebSocketTransport:
    """A transport over an aiohttp websocket, server side or client side.

    Binary messages bypass aiohttp's ``send_bytes``, which costs the bulk path dearly: as a
    client it copies every message twice to mask it (into a new bytearray, then again to
    prepend the header), and as a server it writes the header and the payload as two
    transport writes, i.e. two TLS records and two ``send`` syscalls. Here the header and the
    payload go to the transport in one ``writelines`` (uvloop's TLS transport encrypts both
    and flushes them with one syscall), and a client masks the message in place, in a buffer
    it owns: no copy when the session hands over a bytearray, one otherwise. The masking keys
    come from ``os.urandom``, read ahead in batches (RFC 6455 §5.3 asks for an unpredictable
    key; aiohttp's own writer uses a seeded Mersenne Twister). A small message (a
    WINDOW_UPDATE, a PING, a small response) is joined to its header instead, so that it
    stays one TLS record. Control
    frames (ping, pong, close) still go through aiohttp; each frame is written synchronously,
    so frames never interleave.
    """

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._masks = _MaskKeys()

    def send_nowait(self, message: Message) -> bool:
        writer: Any = getattr(self._ws, "_writer", None)
        if type(writer) is not WebSocketWriter or writer.compress or writer.protocol._paused:
            return False
        _write_binary(writer, message, self._masks)
        return True

    async def send(self, message: Message) -> None:
        writer: Any = getattr(self._ws, "_writer", None)
        if type(writer) is not WebSocketWriter or writer.compress:
            # Not aiohttp's writer as we know it (or compression on): the slow, safe way.
            await self._ws.send_bytes(bytes(message) if isinstance(message, bytearray) else message)
            return
        await _send_binary(writer, message, self._masks)

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


#: Messages up to this size are written with their header in one buffer (one TLS record, the
#: copy is cheap); larger ones as two buffers in one ``writelines`` (no copy of the payload).
SMALL_MESSAGE = 16 * 1024


class _MaskKeys:
    """Websocket masking keys from the OS CSPRNG, 4 bytes at a time out of a larger buffer.

    RFC 6455 §5.3 asks for unpredictable keys, which ``os.urandom`` gives; calling it per
    message costs a ``getrandom`` syscall per message, so the keys come from one call per
    :data:`_MASK_BATCH` messages instead (the same source, read ahead)."""

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def take(self) -> bytes:
        offset = self._offset
        if offset >= len(self._buffer):
            self._buffer = os.urandom(4 * _MASK_BATCH)
            offset = 0
        self._offset = offset + 4
        return self._buffer[offset : offset + 4]


#: Masking keys read from the OS per ``getrandom`` call.
_MASK_BATCH = 256


async def _send_binary(writer: Any, message: Message, masks: _MaskKeys | None = None) -> None:
    """Write one binary frame straight to ``writer``'s transport, then wait while the
    transport is paused, as aiohttp's own ``send_frame`` does (minus its extra copies)."""
    _write_binary(writer, message, masks or _MaskKeys())
    protocol = writer.protocol
    if protocol._paused:
        await protocol._drain_helper()


def _write_binary(writer: Any, message: Message, masks: _MaskKeys) -> None:
    """Write one binary frame straight to ``writer``'s transport (one write call)."""
    transport: asyncio.Transport = writer.transport
    if writer._closing or transport.is_closing():
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    size = len(message)
    mask = masks.take() if writer.use_mask else None
    payload: Message = message
    if mask is not None:
        payload = message if isinstance(message, bytearray) else bytearray(message)
        websocket_mask(mask, payload)
    if size <= SMALL_MESSAGE:
        transport.write(frame_header(size, mask) + payload)
    else:
        transport.writelines((frame_header(size, mask), payload))


class _Direction:
    """One direction of an in-memory link: a queue, ``depth`` slots of capacity, a closed flag.

    A ``None`` in the queue marks the end; it never needs a free slot, so closing never blocks.
    Slots are counted by hand rather than with a semaphore, so that a sender can take one
    without waiting (:meth:`MemoryTransport.send_nowait`) when no other sender is queued.
    """

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue()
        self.free = depth
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def try_acquire(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one; returns at once (slot or not) once closed."""
        if self.closed or self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Free a slot, handing it straight to the first sender in line if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)


class MemoryTransport:
    """One end of an in-memory link with the same backpressure as a socket."""

    def __init__(self, incoming: _Direction, outgoing: _Direction) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    async def _put(self, message: bytes | str) -> None:
        if self._outgoing.closed:
            raise ConnectionResetError("memory transport is closed")
        await self._outgoing.acquire()
        if self._outgoing.closed:
            raise ConnectionResetError("memory transport is closed")
        self._outgoing.queue.put_nowait(message)

    def send_nowait(self, message: Message) -> bool:
        if self._outgoing.closed:
            raise ConnectionResetError("memory transport is closed")
        if not self._outgoing.try_acquire():
            return False
        self._outgoing.queue.put_nowait(
            bytes(message) if isinstance(message, bytearray) else message
        )
        return True

    async def send(self, message: Message) -> None:
        # A copy, so that the receiver gets bytes as from a websocket and the sender's buffer
        # stays the sender's (tests only: production runs over WebSocketTransport).
        await self._put(bytes(message) if isinstance(message, bytearray) else message)

    async def send_text(self, text: str) -> None:
        """Send a text message (tests use it to check that the peer rejects it)."""
        await self._put(text)

    async def receive(self) -> bytes | str | None:
        message = await self._incoming.queue.get()
        if message is None:
            self._incoming.queue.put_nowait(None)  # later calls see the end too
            return None
        self._incoming.release()
        return TEXT if isinstance(message, str) else message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._outgoing.close()
        self._incoming.close()


def memory_pair(depth: int = 64) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports; ``depth`` messages may be in flight each way."""
    a_to_b, b_to_a = _Direction(depth), _Direction(depth)
    return MemoryTransport(b_to_a, a_to_b), MemoryTransport(a_to_b, b_to_a)
