"""Message transports under a tunnel session: an aiohttp websocket, or an in-memory pair.

A transport moves whole messages. The session needs only three operations, so tests can run a
real session over :func:`memory_pair` without sockets, and production runs it over a websocket.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from aiohttp._websocket.helpers import websocket_mask
from aiohttp.http_websocket import WebSocketError, WebSocketWriter, WSCloseCode, WSMessage

#: What ``receive`` returns when the peer sent a text message (a protocol violation).
TEXT = "text"

#: A message to send. The transport takes ownership: a bytearray may be masked in place.
Message = bytes | bytearray

_FIN_BINARY = 0x82
_MASK_BIT = 0x80
_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack
_UNPACK_LEN2 = struct.Struct("!H").unpack_from
_UNPACK_LEN3 = struct.Struct("!Q").unpack_from

_OP_CONTINUATION, _OP_TEXT, _OP_BINARY = 0x0, 0x1, 0x2
_OP_CLOSE, _OP_PING, _OP_PONG = 0x8, 0x9, 0xA
_ALLOWED_CLOSE_CODES = frozenset(int(code) for code in WSCloseCode)


class Transport(Protocol):
    async def send(self, message: Message) -> None:
        """Send one binary message; waits while the link is congested (backpressure).

        The transport owns ``message`` from then on (a bytearray may be masked in place), so
        the caller must not reuse it."""

    async def receive(self) -> bytes | bytearray | str | None:
        """The next message: bytes (or a bytearray the caller may keep), :data:`TEXT` for a
        text message, None once closed."""

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
    it owns: no copy when the session hands over a bytearray, one otherwise. The masking key
    comes from ``os.urandom`` (RFC 6455 §5.3 asks for an unpredictable key; aiohttp's own
    writer uses a seeded Mersenne Twister). A small message (a WINDOW_UPDATE, a PING, a small
    response) is joined to its header instead, so that it stays one TLS record. Control
    frames (ping, pong, close) still go through aiohttp; each frame is written synchronously,
    so frames never interleave.
    """

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, message: Message) -> None:
        writer: Any = getattr(self._ws, "_writer", None)
        if type(writer) is not WebSocketWriter or writer.compress:
            # Not aiohttp's writer as we know it (or compression on): the slow, safe way.
            await self._ws.send_bytes(bytes(message) if isinstance(message, bytearray) else message)
            return
        await _send_binary(writer, message)

    async def receive(self) -> bytes | bytearray | str | None:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes | bytearray = msg.data
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


async def _send_binary(writer: Any, message: Message) -> None:
    """Write one binary frame straight to ``writer``'s transport, then wait while the
    transport is paused, as aiohttp's own ``send_frame`` does (minus its extra copies)."""
    transport: asyncio.Transport = writer.transport
    if writer._closing or transport.is_closing():
        raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
    size = len(message)
    mask = os.urandom(4) if writer.use_mask else None
    payload: Message = message
    if mask is not None:
        payload = message if isinstance(message, bytearray) else bytearray(message)
        websocket_mask(mask, payload)
    if size <= SMALL_MESSAGE:
        transport.write(frame_header(size, mask) + payload)
    else:
        transport.writelines((frame_header(size, mask), payload))
    protocol = writer.protocol
    if protocol._paused:
        await protocol._drain_helper()


class TunnelFrameReader:
    """The websocket frame parser of the hub's side of a tunnel, in place of aiohttp's.

    aiohttp's reader copies a masked message four times before anyone sees it (a slice per
    socket read, a join, a bytearray to unmask in, and ``bytes()`` of that), and a tunnel
    message of 256 KiB practically always spans two socket reads. This one appends each
    read's bytes straight to the frame's bytearray, unmasks it in place and queues that
    bytearray: one copy (plus, at worst, a realloc when a frame spans reads). Messages go to
    aiohttp's queue as aiohttp's own reader would put them (binary, text, ping, pong, close),
    so the websocket response keeps doing the ping/pong and close handshake.

    It is strict where the tunnel can be: frames from the client must be masked (RFC 6455
    §5.1), no extension is negotiated so the RSV bits must be clear, control frames are whole
    and at most 125 bytes, continuation frames need a message to continue, and a message may
    not exceed ``max_msg_size``. Any fault fails the queue with a :class:`WebSocketError`,
    which aiohttp turns into a close with that code.

    aiohttp's reader also stops parsing while its queue is full; this one parses whatever a
    socket read brings (the queue still pauses the socket), so what it holds beyond the
    queue's limit is bounded by one read and one message.
    """

    def __init__(self, queue: Any, max_msg_size: int, *, require_mask: bool = True) -> None:
        self.queue = queue
        self._max_msg_size = max_msg_size
        self._require_mask = require_mask
        self._failed = False
        self._head = b""  # the start of a frame header split across reads
        self._frame: bytearray | None = None  # payload of the frame being read
        self._remaining = 0  # its bytes still to come
        self._mask: bytes | None = None
        self._fin = True
        self._opcode = 0
        self._message_opcode = -1  # a fragmented text/binary message in progress
        self._fragments = bytearray()

    def feed_eof(self) -> None:
        self.queue.feed_eof()

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        """aiohttp's parser interface: (True, ...) once the stream is broken."""
        if self._failed:
            return True, b""
        try:
            self._feed(memoryview(data))
        except WebSocketError as exc:
            self._failed = True
            self.queue.set_exception(exc)
            return True, b""
        return False, b""

    def _feed(self, data: memoryview) -> None:
        pos, end = 0, len(data)
        if self._head:
            data = memoryview(self._head + data)
            end = len(data)
            self._head = b""
        while pos < end:
            frame = self._frame
            if frame is None:
                header = self._header(data, pos, end)
                if header < 0:
                    self._head = bytes(data[pos:end])
                    return
                pos = header
                if not self._remaining:
                    self._finish(bytearray())
                continue
            take = min(end - pos, self._remaining)
            frame += data[pos : pos + take]
            self._remaining -= take
            pos += take
            if not self._remaining:
                self._frame = None
                self._finish(frame)

    def _header(self, data: memoryview, pos: int, end: int) -> int:
        """Parse the frame header at ``pos``: where its payload starts, or -1 if incomplete."""
        if end - pos < 2:
            return -1
        first, second = data[pos], data[pos + 1]
        fin, opcode, masked, length = first >> 7, first & 0x0F, second >> 7, second & 0x7F
        start = pos + 2
        if length == 126:
            if end - start < 2:
                return -1
            (length,) = _UNPACK_LEN2(data, start)
            start += 2
        elif length == 127:
            if end - start < 8:
                return -1
            (length,) = _UNPACK_LEN3(data, start)
            start += 8
        if masked:
            if end - start < 4:
                return -1
            self._mask = bytes(data[start : start + 4])
            start += 4
        else:
            self._mask = None
        self._check(first & 0x70, fin, opcode, bool(masked), length)
        self._fin, self._opcode = bool(fin), opcode
        self._remaining = length
        if length:
            # Grown as bytes arrive, never allocated from the announced length: a peer's
            # header alone must not make us hold a message's worth of memory.
            self._frame = bytearray()
        return start

    def _check(self, rsv: int, fin: int, opcode: int, masked: bool, length: int) -> None:
        if rsv:
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "reserved bits set")
        if self._require_mask and not masked:
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= _OP_CLOSE:
            if opcode > _OP_PONG:
                raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not fin or length > 125:
                raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "bad control frame")
            return
        if opcode > _OP_BINARY:
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if (opcode == _OP_CONTINUATION) != (self._message_opcode >= 0):
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "bad continuation frame")
        if self._max_msg_size and length + len(self._fragments) >= self._max_msg_size:
            raise WebSocketError(
                WSCloseCode.MESSAGE_TOO_BIG,
                f"Message size {length + len(self._fragments)} exceeds limit {self._max_msg_size}",
            )

    def _finish(self, payload: bytearray) -> None:
        if self._mask is not None:
            websocket_mask(self._mask, payload)
        opcode = self._opcode
        if opcode >= _OP_CLOSE:
            self._control(opcode, payload)
            return
        if opcode == _OP_CONTINUATION:
            self._fragments += payload
            if not self._fin:
                return
            opcode, payload = self._message_opcode, self._fragments
            self._message_opcode, self._fragments = -1, bytearray()
        elif not self._fin:
            self._message_opcode, self._fragments = opcode, payload
            return
        if opcode == _OP_BINARY:
            self.queue.feed_data(WSMessage(aiohttp.WSMsgType.BINARY, payload, ""), len(payload))
            return
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketError(WSCloseCode.INVALID_TEXT, "invalid UTF-8 text") from None
        self.queue.feed_data(WSMessage(aiohttp.WSMsgType.TEXT, text, ""), len(payload))

    def _control(self, opcode: int, payload: bytearray) -> None:
        if opcode == _OP_CLOSE:
            code, reason = 0, ""
            if len(payload) == 1:
                raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "bad close frame")
            if payload:
                code = int.from_bytes(payload[:2], "big")
                if code < 3000 and code not in _ALLOWED_CLOSE_CODES:
                    raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, f"bad close code {code}")
                try:
                    reason = payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    raise WebSocketError(WSCloseCode.INVALID_TEXT, "invalid UTF-8") from None
            self.queue.feed_data(WSMessage(aiohttp.WSMsgType.CLOSE, code, reason), 0)
            return
        kind = aiohttp.WSMsgType.PING if opcode == _OP_PING else aiohttp.WSMsgType.PONG
        self.queue.feed_data(WSMessage(kind, bytes(payload), ""), len(payload))


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
        self._incoming.slots.release()
        return TEXT if isinstance(message, str) else message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._outgoing.close()
        self._incoming.close()


def memory_pair(depth: int = 64) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-memory transports; ``depth`` messages may be in flight each way."""
    a_to_b, b_to_a = _Direction(depth), _Direction(depth)
    return MemoryTransport(b_to_a, a_to_b), MemoryTransport(a_to_b, b_to_a)
