"""One HTTP/2 request stream of the hub's listener, as aiohttp sees it.

:class:`Http2Stream` is the response writer aiohttp's ``StreamResponse`` writes through (HEADERS
and DATA within the peer's windows), :class:`StreamPayload` the request body reader whose
window returns as the handler reads, and :class:`StreamTransport` the per-stream
``request.transport`` whose ``abort`` resets this stream only.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from aiohttp.abc import AbstractStreamWriter
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from h2.connection import ConnectionInputs, ConnectionState
from h2.stream import StreamClosedBy, StreamInputs, StreamState
from multidict import CIMultiDict

from clusternet_aa.apiserver.http2_hpack import (
    SHORT_LENGTHS,
    LiteralEncoder,
    encode_field,
    length_prefix,
    literal_prefix,
)

if TYPE_CHECKING:
    from clusternet_aa.apiserver.http2_connection import Http2Connection


#: Response headers that mean something only to one HTTP/1.1 connection (RFC 9113 8.2.2).
CONNECTION_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: DATA bytes that may wait in h2's output before they are written to the TLS transport (whose
#: high-water mark then pauses the writers): fewer TLS records than one per frame, bounded.
_FLUSH_BYTES = 64 * 1024
#: Frame types and flags (RFC 9113 6), for the frames :meth:`Http2Stream._finish` writes.
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4
_FRAME_HEADER = struct.Struct(">IBI")
#: h2's states, for the fixed transitions :meth:`Http2Stream._finish` applies.
_SERVER_OPEN = ConnectionState.SERVER_OPEN
_HALF_CLOSED_REMOTE = StreamState.HALF_CLOSED_REMOTE
_CLOSED = StreamState.CLOSED
_SEND_END_STREAM = StreamClosedBy.SEND_END_STREAM


#: Response header names as aiohttp spells them -> (the name as sent: lower case, bytes,
#: empty for the connection-specific ones, which are dropped; what the literal HPACK encoding
#: writes before the value, None when the pair may be a static-table entry). A handful of
#: names repeat on every response. Cleared when full.
_NAMES: dict[str, tuple[bytes, bytes | None]] = {}
_NAMES_MAX = 1024
#: Status lines aiohttp writes -> (the :status value, that field HPACK-encoded). Cleared when
#: full.
_STATUSES: dict[str, tuple[bytes, bytes]] = {}
_STATUSES_MAX = 256


def _name(name: str) -> tuple[bytes, bytes | None]:
    lower = name.lower()
    wire = b"" if lower in CONNECTION_HEADERS else lower.encode()
    entry = (wire, literal_prefix(wire) if wire else None)
    if len(_NAMES) >= _NAMES_MAX:
        _NAMES.clear()
    _NAMES[str(name)] = entry
    return entry


def _status(status_line: str) -> tuple[bytes, bytes]:
    status = status_line.split(" ", 2)[1].encode()
    entry = (status, encode_field(b":status", status))
    if len(_STATUSES) >= _STATUSES_MAX:
        _STATUSES.clear()
    _STATUSES[status_line] = entry
    return entry


def _frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """A frame's 9-byte header (RFC 9113 4.1): 24-bit length and type as one 32-bit word,
    flags, stream id (R bit clear), packed in one call."""
    return _FRAME_HEADER.pack(length << 8 | kind, flags, stream_id)


def _encode_head(encoder: LiteralEncoder, status: bytes, fields: list[tuple[str, str]]) -> bytes:
    """The HPACK block :meth:`LiteralEncoder.encode` makes of the head ``_send_head`` would
    hand h2 (``status``: the :status field, encoded), built from aiohttp's strings in one pass:
    no list of byte pairs, no per-field pair lookup for names that have no static entry."""
    out = [encoder.size_update(), status]
    append = out.append
    names = _NAMES
    lengths = SHORT_LENGTHS
    for name, value in fields:
        wire, prefix = names.get(name) or _name(name)
        if not wire:
            continue
        data = value.encode("utf-8", "surrogateescape")
        if prefix is None:
            append(encode_field(wire, data))
        else:
            append(prefix)
            size = len(data)
            append(lengths[size] if size < 127 else length_prefix(size))
            append(data)
    return b"".join(out)


class StreamPayload(StreamReader):
    """A request body fed from DATA frames; returns stream credit as the handler reads.

    aiohttp's ``StreamReader`` has no hook for "bytes consumed": every read path goes through
    ``_read_nowait_chunk``, so that is where credit is returned (the upload tests fail if
    aiohttp stops routing reads through it: the window would never reopen).
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: Http2Stream, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(cast(Any, stream), limit, loop=loop)
        self._stream = stream

    def _read_nowait_chunk(self, n: int) -> bytes:
        data = super()._read_nowait_chunk(n)
        if data:
            self._stream.consumed(len(data))
        return data


class StreamTransport(asyncio.Transport):
    """``request.transport`` of an HTTP/2 request: the TLS connection's facts, this stream's
    fate. The forwarder aborts the transport when a response cannot complete; on HTTP/2 that
    must reset one stream, not the connection carrying a thousand others."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Http2Stream) -> None:
        self._stream = stream

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._stream.connection.transport
        return default if transport is None else transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._stream.closed

    def close(self) -> None:
        """End this stream: a finished response is left as is, anything else is cancelled."""
        self._stream.reset(h2.errors.ErrorCodes.CANCEL)

    def abort(self) -> None:
        """Fail this stream, so the client sees an error rather than a short body."""
        self._stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)

    def get_write_buffer_size(self) -> int:
        transport = self._stream.connection.transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("an HTTP/2 stream is written through its response, not its transport")


class Http2Stream(AbstractStreamWriter):
    """One request stream: the response writer, the body reader's protocol, the request's
    protocol object (``request.protocol``), and the handler task. One object for all four
    roles keeps an idle watch's state small."""

    __slots__ = (
        "_compressor",
        "_ended",
        "_head",
        "_unacked",
        "_window_waiter",
        "body_read",
        "buffer_size",
        "closed",
        "connection",
        "id",
        "length",
        "output_size",
        "payload",
        "started",
        "task",
    )

    def __init__(self, connection: Http2Connection, stream_id: int) -> None:
        self.connection = connection
        self.id = stream_id
        self.payload: StreamReader = EMPTY_PAYLOAD
        self.task: asyncio.Task[None] | None = None
        #: The handler task has taken its first step (its ``finally`` will end the stream).
        self.started = False
        #: Reset (either side) or both halves ended: nothing more goes out.
        self.closed = False
        #: The response's status line and header fields, until they are sent.
        self._head: tuple[str, list[tuple[str, str]]] | None = None
        self._ended = False
        self._window_waiter: asyncio.Future[None] | None = None
        self._unacked = 0
        #: Request body bytes the handler has read.
        self.body_read = 0
        self._compressor: Any = None
        self.buffer_size = 0
        self.output_size = 0
        self.length: int | None = None

    # --- what BaseRequest and StreamReader read from their "protocol" -----------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return None if self.closed else StreamTransport(self)

    @property
    def ssl_context(self) -> Any:
        return self.connection.ssl_context

    @property
    def peername(self) -> Any:
        return self.connection.peername

    @property
    def sockname(self) -> Any:
        return self.connection.sockname

    @property
    def connected(self) -> bool:
        return not self.closed

    @property
    def max_field_size(self) -> int:
        return self.connection.listener.settings.max_header_list_size

    @property
    def max_headers(self) -> int:
        return self.connection.listener.settings.max_header_list_size // 32

    _reading_paused = False

    def pause_reading(self) -> None:
        """Never needed: the stream window already bounds what the peer may send."""

    def resume_reading(self, resume_parser: bool = True) -> None:
        """Credit goes back per byte read (:meth:`consumed`), not on a buffer threshold."""

    def consumed(self, size: int) -> None:
        """The handler read ``size`` body bytes: they no longer count against the connection's
        buffer, and the stream gets its credit back."""
        self.body_read += size
        self.connection.body_read(size)
        self.credit(size)

    def credit(self, size: int) -> None:
        """Return ``size`` bytes of stream credit to the client, batched."""
        self._unacked += size
        if self.closed or self._unacked < self.connection.listener.settings.stream_window // 4:
            return
        increment, self._unacked = self._unacked, 0
        self.connection.open_stream_window(self.id, increment)

    # --- the response writer -----------------------------------------------------------------

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        """Keep the head until the first write (or ``send_headers``), so that a short answer
        leaves in one TLS record with its body. Kept as aiohttp's (name, value) strings: the
        one-go answer (:meth:`_finish`) encodes them straight into the HPACK block, without a
        list of byte pairs for h2."""
        self._head = (status_line, list(headers.items()))

    def send_headers(self) -> None:
        if self._head is not None and not self.closed:
            self._send_head(end_stream=False)
            self.connection.flush_soon()

    def _send_head(self, *, end_stream: bool) -> None:
        head, self._head = self._head, None
        if head is None:
            return
        status_line, fields = head
        status = _STATUSES.get(status_line) or _status(status_line)
        pairs = [(b":status", status[0])]
        names = _NAMES
        for name, value in fields:
            wire = (names.get(name) or _name(name))[0]
            if wire:
                pairs.append((wire, value.encode("utf-8", "surrogateescape")))
        try:
            self.connection.h2.send_headers(self.id, pairs, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None
        if end_stream:
            self._ended = True

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Send a body chunk. With a declared Content-Length (aiohttp sets ``length``), the
        chunk that completes it ends the stream in its own DATA frame, so ``write_eof`` has
        no empty DATA frame left to send (h2's work for one frame, per response); bytes past
        the declared length are dropped, as aiohttp's HTTP/1.1 writer drops them."""
        if self._ended:
            return
        last = False
        if self._compressor is not None:
            chunk = self._compressor.compress(chunk)
        elif self.length is not None:
            remaining, size = self.length, len(chunk)
            if size >= remaining:
                if size > remaining:
                    chunk = chunk[:remaining]
                self.length = 0
                last = True
            else:
                self.length = remaining - size
        if chunk or last:
            self.output_size += len(chunk)
            await self._send(chunk, end_stream=last)

    async def write_eof(self, chunk: bytes = b"") -> None:
        if self._ended:
            return
        data: bytes | bytearray | memoryview = chunk
        if self._compressor is not None:
            data = self._compressor.compress(chunk) + self._compressor.flush()
        self.output_size += len(data)
        if self.closed:
            raise ConnectionResetError(f"HTTP/2 stream {self.id} was reset")
        if not data and self._head is not None:
            if not self._finish(data):
                self._send_head(end_stream=True)
                self.connection.flush_ended()
        else:
            await self._send(data, end_stream=True)
        self._ended = True

    async def drain(self) -> None:
        await self.connection.writable()

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        wbits = _GZIP_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._compressor = zlib.compressobj(
            wbits=wbits, strategy=zlib.Z_DEFAULT_STRATEGY if strategy is None else strategy
        )

    def enable_chunking(self) -> None:
        """HTTP/2 frames bodies itself; the Transfer-Encoding header is dropped on the way out."""

    async def _send(self, data: bytes | bytearray | memoryview, *, end_stream: bool) -> None:
        """Send ``data`` within the peer's windows, waiting for credit instead of buffering.

        Frames go to the TLS transport at the end of the loop iteration (so a response head,
        its body and its end leave in one TLS write), or at once when ``_FLUSH_BYTES`` are
        waiting, so that the transport's high-water mark bounds what a stalled client holds.
        """
        connection = self.connection
        if end_stream and self._head is not None and self._finish(data):
            return
        conn = connection.h2
        view = memoryview(data)
        self._send_head(end_stream=False)
        while True:
            self._check_open()
            if not view:
                if end_stream:
                    self._end()
                    connection.flush_ended()
                else:
                    connection.flush_soon()
                return
            await connection.writable()
            self._check_open()
            try:
                size = min(
                    len(view), conn.local_flow_control_window(self.id), conn.max_outbound_frame_size
                )
                if size <= 0:
                    connection.flush()
                    await self._wait_window()
                    continue
                last = end_stream and size == len(view)
                piece = (  # no copy of a write that fits one frame
                    data if isinstance(data, bytes) and size == len(data) else bytes(view[:size])
                )
                conn.send_data(self.id, piece, end_stream=last)
            except h2.exceptions.ProtocolError as exc:
                self.closed = True
                raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None
            view = view[size:]
            connection.unflushed += size
            if connection.unflushed >= _FLUSH_BYTES:
                connection.flush()
            if last:
                self._ended = True
                connection.flush_ended()
                return

    def _finish(self, data: bytes | bytearray | memoryview) -> bool:
        """The whole response at once, when it can be: its head (not sent yet) and ``data``
        as one DATA frame with END_STREAM (or the head alone ending the stream). False, with
        nothing done, when it does not fit one frame and both windows, when the head is
        informational or the transport is paused: ``_send`` then goes the general way.

        Why not h2's ``send_headers``/``send_data``: each builds ``hyperframe`` frame objects
        (flag sets, padding and priority mixins), re-encodes the header list, logs, and
        checks what the hub already guarantees; for a small proxied answer that was a fifth
        of the hub's HTTP/2 CPU per request. The state stays h2's: the same connection and
        stream state-machine inputs, in the same order, and the same window accounting; only
        the frames' bytes are written here (a frame header is 9 bytes) and go out behind
        whatever h2 queued before, as :meth:`Http2Connection.flush_ended` sends them (True:
        sent or queued so; False: nothing done). A response to a request its client ended
        takes h2's fixed transitions directly (see below).
        """
        connection = self.connection
        conn = connection.h2
        head = self._head
        if head is None:
            return False
        encoder = conn.encoder
        status = _STATUSES.get(head[0]) or _status(head[0])
        stream = conn.streams.get(self.id)
        size = len(data)
        if (
            self.closed
            or connection.writing_paused
            or stream is None
            or stream.state_machine.headers_sent
            or status[0][:1] == b"1"
            or not isinstance(encoder, LiteralEncoder)
            or size > conn.max_outbound_frame_size
            or size > stream.outbound_flow_control_window
            or size > conn.outbound_flow_control_window
        ):
            return False
        self._head = None
        machine = stream.state_machine
        if (
            conn.state_machine.state is _SERVER_OPEN
            and machine.state is _HALF_CLOSED_REMOTE
            and machine.client is False
        ):
            # A response to a request whose stream the client ended (every GET): h2's
            # transitions here are fixed, so they are applied as h2 would, without five
            # ``process_input`` calls (each hashes two enums in Python). The connection's
            # SEND_HEADERS and SEND_DATA in SERVER_OPEN change nothing; the stream's
            # SEND_HEADERS runs ``response_sent`` (headers_sent was checked false above),
            # SEND_DATA changes nothing, SEND_END_STREAM runs ``send_end_stream`` and closes.
            block = _encode_head(encoder, status[1], head[1])
            machine.headers_sent = True
            machine.stream_closed_by = _SEND_END_STREAM
            machine.state = _CLOSED
        else:
            try:
                conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
                machine.process_input(StreamInputs.SEND_HEADERS)
                block = _encode_head(encoder, status[1], head[1])
                if size:
                    conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
                    machine.process_input(StreamInputs.SEND_DATA)
                machine.process_input(StreamInputs.SEND_END_STREAM)
            except h2.exceptions.ProtocolError as exc:
                self.closed = True
                raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None
        self._ended = True
        sid = self.id
        limit = conn.max_outbound_frame_size
        end = 0 if size else _END_STREAM
        if len(block) <= limit:
            out: list[bytes | bytearray | memoryview] = [
                _FRAME_HEADER.pack(len(block) << 8 | _HEADERS, _END_HEADERS | end, sid),
                block,
            ]
        else:  # a head larger than a frame: HEADERS, then CONTINUATION frames (RFC 9113 6.10)
            pieces = [block[i : i + limit] for i in range(0, len(block), limit)]
            out = [_frame_header(len(pieces[0]), _HEADERS, end, sid), pieces[0]]
            for piece in pieces[1:]:
                flags = _END_HEADERS if piece is pieces[-1] else 0
                out += (_frame_header(len(piece), _CONTINUATION, flags, sid), piece)
        if size:
            stream.outbound_flow_control_window -= size
            conn.outbound_flow_control_window -= size
            out += (_FRAME_HEADER.pack(size << 8 | _DATA, _END_STREAM, sid), data)
        connection.unflushed += size
        connection.write_ended(b"".join(out))
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionResetError(f"HTTP/2 stream {self.id} was reset")

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            try:
                self.connection.h2.end_stream(self.id)
            except h2.exceptions.ProtocolError as exc:
                self.closed = True
                raise ConnectionResetError(f"HTTP/2 stream {self.id}: {exc}") from None

    async def _wait_window(self) -> None:
        waiter = self._window_waiter = asyncio.get_running_loop().create_future()
        blocked = self.connection.blocked
        blocked.add(self)
        try:
            await waiter
        finally:
            self._window_waiter = None
            blocked.discard(self)

    def window_opened(self) -> None:
        waiter = self._window_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- ends ----------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    def reset(self, code: h2.errors.ErrorCodes) -> None:
        """Reset this stream (our side), unless it is already over."""
        if self.closed:
            return
        self.closed = True
        if not self._ended:
            self.connection.reset_stream(self.id, code)
        self.window_opened()

    def peer_reset(self) -> None:
        """The client reset the stream: its handler is cancelled, so the tunnel stream behind
        it is reset and the agent's request to the child ends."""
        self.closed = True
        self.window_opened()
        self.payload.set_exception(ConnectionResetError("the client reset the stream"))
        self.cancel_handler()

    def cancel_handler(self) -> None:
        """Cancel the handler task. One cancelled before its first step never runs its body,
        nor its ``finally``: that happens when the client resets a stream in the same read
        that opened it (the "rapid reset" pattern), so the stream is ended here; otherwise
        its place would never be freed, and a connection with max_concurrent_streams such
        places would refuse every request."""
        task = self.task
        if task is None:
            return
        task.cancel()
        if not self.started:
            self.connection.stream_done(self)
