"""Message transports under a tunnel session: an aiohttp websocket, or an in-memory pair.

A transport moves whole messages. The session needs only three operations, so tests can run a
real session over :func:`memory_pair` without sockets, and production runs it over a websocket.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp._websocket.helpers import websocket_mask
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http_websocket import WebSocketWriter

#: What ``receive`` returns when the peer sent a text message (a protocol violation).
TEXT = "text"
#: What ``receive`` returns when the messages that arrived went to the sink (see
#: :meth:`Transport.deliver_to`) and the sink asked to stop: nothing more to process here.
DELIVERED = "delivered"

#: Takes one binary message as it arrives; returns False to stop deliveries (the receiver is
#: over its backlog bound or finished) until the next :meth:`Transport.receive` call.
Sink = Callable[[bytes], bool]

#: A message to send. The transport takes ownership: a bytearray may be masked in place.
Message = bytes | bytearray

_FIN_BINARY = 0x82
_MASK_BIT = 0x80
_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack
#: Header bytes of a frame of ``n`` < 126 payload bytes, unmasked and masked (made once).
_SHORT_HEADERS = tuple(_PACK_LEN1(_FIN_BINARY, n) for n in range(126))
_SHORT_MASKED_HEADERS = tuple(_PACK_LEN1(_FIN_BINARY, n | _MASK_BIT) for n in range(126))
_BINARY = aiohttp.WSMsgType.BINARY


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
        """The next message: bytes, :data:`TEXT` for a text message, None once closed, or
        :data:`DELIVERED` once the sink (if any) asked to stop."""

    def deliver_to(self, sink: Sink) -> bool:
        """Hand binary messages to ``sink`` as they arrive, from the callback that parsed them,
        while a :meth:`receive` call is pending; that call then returns only for anything
        else (or :data:`DELIVERED`). False when this transport cannot, and nothing changes."""

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
        self._tap: _ParserTap | None = None
        # aiohttp's writer once it is known to be the one we write through directly (it is set
        # once, when the websocket is prepared, and its type and compression never change).
        self._writer: Any = None

    def deliver_to(self, sink: Sink) -> bool:
        if self._tap is None:
            self._tap = _ParserTap.install(self._ws, sink)
        return self._tap is not None

    def send_nowait(self, message: Message) -> bool:
        writer = self._writer
        if writer is None:
            writer = getattr(self._ws, "_writer", None)
            if type(writer) is not WebSocketWriter or writer.compress:
                return False
            self._writer = writer
        if writer.protocol._paused:
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
        tap = self._tap
        if tap is not None and tap.can_park() and await tap.park():
            return DELIVERED
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type is aiohttp.WSMsgType.TEXT:
            return TEXT
        # CLOSE, CLOSING, CLOSED, ERROR (including a message over max_msg_size).
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._tap is not None:
            self._tap.disable()  # a parked receive() goes back to aiohttp's own
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode()[:120])


class _ParserTap:
    """Delivers binary websocket messages from the protocol callback that parsed them.

    aiohttp's protocol feeds received bytes to its websocket parser, which queues each message
    and wakes the task awaiting ``receive()``: one task hop, a loop iteration and a coroutine
    resume per message, which at low concurrency is a measurable share of a proxied request.
    This tap takes the parser's place in the protocol (``_payload_parser``, which the protocol
    only calls ``feed_data`` and ``feed_eof`` on), lets the real parser parse, and, while the
    receiver is parked in :meth:`park`, takes the binary messages off the queue through the
    queue's own ``read()`` (so its size accounting and read pausing stay aiohttp's) and hands
    them to the sink. Anything else (a close, an error, the end) stays queued, and the parked
    receiver goes back to ``ws.receive()``, which handles it as always; so it does while
    aiohttp itself reads (closing) and once the transport closes.

    :meth:`install` checks the shape of everything it relies on and the configuration (no
    heartbeat, no receive timeout, autoping on) under which aiohttp touches the queue only
    through the parser or from ``receive()``/``close()``; if anything differs it installs
    nothing and the transport keeps the plain ``ws.receive()`` path.
    """

    __slots__ = ("_enabled", "_loop", "_parked", "_parser", "_queue", "_sink", "_ws")

    def __init__(self, ws: Any, queue: Any, parser: Any, sink: Sink) -> None:
        # Kept: asyncio.get_running_loop() costs a getpid() syscall per call.
        self._loop = asyncio.get_running_loop()
        self._ws = ws
        self._queue = queue
        self._parser = parser
        self._sink = sink
        self._parked: asyncio.Future[bool] | None = None
        self._enabled = True

    @classmethod
    def install(cls, ws: Any, sink: Sink) -> _ParserTap | None:
        queue = getattr(ws, "_reader", None)
        protocol: Any = getattr(queue, "_protocol", None)
        parser = getattr(protocol, "_payload_parser", None)
        timeout = getattr(ws, "_timeout", None)
        receive_timeout = (
            getattr(timeout, "ws_receive", None)
            if isinstance(ws, aiohttp.ClientWebSocketResponse)
            else getattr(ws, "_receive_timeout", 0)
        )
        if (
            type(queue) is not WebSocketDataQueue
            or type(parser) is not WebSocketReader
            or type(getattr(queue, "_buffer", None)) is not deque
            or getattr(ws, "_heartbeat", 0) is not None
            or getattr(ws, "_autoping", False) is not True
            or receive_timeout is not None
            or type(getattr(ws, "_closing", None)) is not bool
        ):
            return None
        tap = cls(ws, queue, parser, sink)
        protocol._payload_parser = tap
        return tap

    # -------------------------------------------------------------- the protocol's side

    def feed_data(self, data: bytes) -> Any:
        result = self._parser.feed_data(data)
        parked = self._parked
        if parked is not None and not parked.done():
            self._deliver(parked)
        return result

    def feed_eof(self) -> None:
        self._parser.feed_eof()
        self._wake(False)

    # -------------------------------------------------------------- the receiver's side

    def can_park(self) -> bool:
        """True when nothing is queued for ``ws.receive()`` to return."""
        ws = self._ws
        queue = self._queue
        return (
            self._enabled
            and not queue._buffer
            and not queue.is_eof()
            and not ws.closed
            and not ws._closing
        )

    async def park(self) -> bool:
        """Wait while messages go to the sink: True once the sink asked to stop, False when
        something is waiting for ``ws.receive()``."""
        parked = self._loop.create_future()
        self._parked = parked
        try:
            delivered: bool = await parked
        finally:
            self._parked = None
        return delivered

    def disable(self) -> None:
        self._enabled = False
        self._wake(False)

    def _wake(self, delivered: bool) -> None:
        parked = self._parked
        if parked is not None and not parked.done():
            parked.set_result(delivered)

    def _deliver(self, parked: asyncio.Future[bool]) -> None:
        queue = self._queue
        buffer = queue._buffer
        ws = self._ws
        sink = self._sink
        try:
            # ``buffer[0][0][0]``: the type of the first queued (message, size) pair, read by
            # index (a WSMessage is a tuple; ``.type`` is a property call).
            while (
                buffer
                and buffer[0][0][0] is _BINARY
                and self._enabled
                and not ws._closing
                and not ws.closed
            ):
                if not sink(_take(queue).data):
                    parked.set_result(True)
                    return
        except Exception as exc:  # noqa: BLE001 - not swallowed: the parked receive() raises it
            parked.set_exception(exc)
            return
        if buffer or queue.is_eof() or not self._enabled or ws.closed or ws._closing:
            parked.set_result(False)


def _take(queue: Any) -> Any:
    """The first queued message, through the queue's ``read()``, which returns at once when a
    message is buffered: its coroutine finishes on the first step."""
    step = queue.read()
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("aiohttp's websocket queue did not return its buffered message")


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
    payload: Message
    if writer.use_mask:
        mask = masks.take()
        payload = message if isinstance(message, bytearray) else bytearray(message)
        websocket_mask(mask, payload)
        # What frame_header() returns, by table for the sizes of most control messages.
        header = _SHORT_MASKED_HEADERS[size] + mask if size < 126 else frame_header(size, mask)
    else:
        payload = message
        header = _SHORT_HEADERS[size] if size < 126 else frame_header(size, None)
    if size <= SMALL_MESSAGE:
        transport.write(header + payload)
    else:
        transport.writelines((header, payload))


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

    def deliver_to(self, sink: Sink) -> bool:
        return False  # tests drive the reader task's path; the websocket tests drive the tap

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
