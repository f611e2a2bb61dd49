"""HTTP/2 on the hub's TLS listener, beside aiohttp's HTTP/1.1, for the same application.

Why: every watch that reaches the hub over HTTP/1.1 holds a TLS connection of its own (about
35 KiB of hub memory with a client certificate, plus aiohttp's per-connection objects).
kube-apiserver's aggregator and client-go speak HTTP/2 when the server's ALPN offers ``h2``, and
then multiplex many requests over one connection, so a watch costs its stream state only.

How: :class:`Http2Listener` is the protocol factory given to ``loop.create_server``. After the
TLS handshake it looks at the negotiated ALPN protocol: ``h2`` gets an :class:`_H2Protocol`
(HTTP/2 framing by the sans-IO ``h2`` library), anything else gets aiohttp's own
``RequestHandler`` from ``web.Server`` unchanged (agents' websocket tunnels, HTTP/1.1 upgrades
for exec/attach/port-forward, every HTTP/1.1 client). Each HTTP/2 request stream becomes a real
``web.Request`` made by the same ``web.Server`` request factory and served by the same handler,
so routing, middlewares, authentication (the client certificate of the TLS connection,
front-proxy headers), authorization and the proxy forwarder are shared.

Per stream (:class:`_H2Stream`): one handler task and nothing else. The request body is a
``StreamReader`` fed from DATA frames whose stream window is returned only as the handler reads
(a slow handler back-pressures its own stream); connection credit is returned as bytes arrive,
so one stalled stream never blocks the others. The response writer sends HEADERS/DATA within
the peer's windows and waits for credit (``drain``), and stops while the TLS transport's write
buffer is above its high-water mark, so a stalled reader costs at most the chunk being written.
``request.transport`` is a per-stream view: ``get_extra_info`` reads the TLS connection,
``abort``/``close`` reset that stream only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.tcp_helpers import tcp_nodelay
from aiohttp.web_protocol import RequestHandler
from hyperframe.frame import GoAwayFrame
from multidict import CIMultiDict, istr

from clusternet_aa.apiserver.http2_headers import MalformedRequest, request_message
from clusternet_aa.apiserver.http2_hpack import LiteralEncoder
from clusternet_aa.apiserver.status import StatusError

logger = logging.getLogger(__name__)
# hpack logs every header it encodes or decodes at DEBUG, credentials included: never let a
# verbose hub (-v 4 and up turns DEBUG on) write bearer tokens to its log.
logging.getLogger("hpack").setLevel(logging.WARNING)

#: ALPN protocol ids, most preferred first.
ALPN_H2 = "h2"
ALPN_HTTP11 = "http/1.1"

#: Response headers that mean something only to one HTTP/1.1 connection (RFC 9113 8.2.2).
_CONNECTION_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: DATA bytes that may wait in h2's output before they are written to the TLS transport (whose
#: high-water mark then pauses the writers): fewer TLS records than one per frame, bounded.
_FLUSH_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Http2Settings:
    """Limits of the HTTP/2 listener; every one bounds what a client can make the hub hold."""

    #: SETTINGS_MAX_CONCURRENT_STREAMS: kube-apiserver sets 1000 for its own HTTP/2 listener
    #: (Go's default is 250); Go clients open another connection beyond it.
    max_concurrent_streams: int = 1000
    #: SETTINGS_MAX_HEADER_LIST_SIZE: the same bound as the HTTP/1.1 side's header limit.
    max_header_list_size: int = 64 * 1024
    #: SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may have unread in the hub.
    stream_window: int = 256 * 1024
    #: Connection window for request bodies: returned as bytes arrive (a stalled stream does
    #: not block the others) while the connection's unread body bytes stay under
    #: ``max_buffered``, and as handlers read them beyond that.
    connection_window: int = 1024 * 1024
    #: Request body bytes all streams of one connection may have unread in the hub (a client
    #: could otherwise fill ``stream_window`` on each of ``max_concurrent_streams`` streams).
    max_buffered: int = 4 * 1024 * 1024
    #: Seconds a connection without streams stays open (GOAWAY, then close): aiohttp's
    #: keep-alive timeout for HTTP/1.1, so an idle client costs the same on either protocol.
    idle_timeout: float = 75.0


class _Connection(h2.connection.H2Connection):
    """h2's connection, with the count of open inbound streams made O(1) amortised.

    h2 counts them on every new request stream by walking all its streams (and forgets the
    closed ones on the way): on a connection where an aggregator multiplexes 1,000 idle
    watches, that walk cost about 0.13 ms of CPU per request (0.65 ms at 5,000). The count
    only feeds h2's check against SETTINGS_MAX_CONCURRENT_STREAMS, so while the number of
    streams h2 holds (open or closed, an upper bound of the open ones) is below that limit
    it is returned as is: the check passes exactly as it would. h2's exact walk runs when
    the bound reaches the limit, or when h2 holds a quarter more streams (plus 64) than were
    open at the last walk, which keeps closed streams from piling up.
    """

    _sweep_at = 64

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held < self._sweep_at and held < self.local_settings.max_concurrent_streams:
            return held
        count = super().open_inbound_streams
        self._sweep_at = count + count // 4 + 64
        return count


class Http2Listener:
    """The protocol factory of the hub's TLS listener: ALPN ``h2`` to HTTP/2, else aiohttp.

    It also keeps the HTTP/2 connections, for the GOAWAY and cancellation of shutdown, and
    counts connections and streams (the tests and the benchmark read them to prove which
    protocol served a client).
    """

    def __init__(
        self, server: web.Server, *, settings: Http2Settings | None = None, enabled: bool = True
    ) -> None:
        self.server = server
        self.settings = settings or Http2Settings()
        self.enabled = enabled
        self.connections: set[_H2Protocol] = set()
        #: Connections accepted since start, by negotiated protocol.
        self.h2_connections_total = 0
        self.http11_connections_total = 0
        #: HTTP/2 request streams served since start.
        self.h2_streams_total = 0
        self._draining = False
        self._idle: asyncio.Event | None = None

    def __call__(self) -> asyncio.BaseProtocol:
        return _Negotiator(self)

    @property
    def active_streams(self) -> int:
        return sum(len(connection.streams) for connection in self.connections)

    def _connection_made(self, transport: asyncio.Transport) -> asyncio.BaseProtocol:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == ALPN_H2 and self.enabled and not self._draining:
            self.h2_connections_total += 1
            protocol = _H2Protocol(self)
            self.connections.add(protocol)
            return protocol
        self.http11_connections_total += 1
        return self.server()

    def _connection_closed(self, connection: _H2Protocol) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def goaway(self) -> None:
        """Tell every HTTP/2 client to open no new streams here (GOAWAY NO_ERROR); streams in
        flight go on, connections close as their last stream ends."""
        self._draining = True
        for connection in list(self.connections):
            connection.drain()

    async def shutdown(self, grace: float) -> None:
        """GOAWAY, wait up to ``grace`` seconds for in-flight streams, then cancel the rest."""
        self.goaway()
        if self.connections:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        tasks = [
            stream.task
            for connection in list(self.connections)
            for stream in connection.streams.values()
            if stream.task is not None
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for connection in list(self.connections):
            connection.close(h2.errors.ErrorCodes.NO_ERROR)


class _Negotiator(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the transport to the real protocol."""

    __slots__ = ("_listener",)

    def __init__(self, listener: Http2Listener) -> None:
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = cast(asyncio.Transport, transport)
        protocol = self._listener._connection_made(tls)
        tls.set_protocol(protocol)
        protocol.connection_made(tls)


class _Payload(StreamReader):
    """A request body fed from DATA frames; returns stream credit as the handler reads.

    aiohttp's ``StreamReader`` has no hook for "bytes consumed": every read path goes through
    ``_read_nowait_chunk``, so that is where credit is returned (the upload tests fail if
    aiohttp stops routing reads through it: the window would never reopen).
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: _H2Stream, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(cast(Any, stream), limit, loop=loop)
        self._stream = stream

    def _read_nowait_chunk(self, n: int) -> bytes:
        data = super()._read_nowait_chunk(n)
        if data:
            self._stream.consumed(len(data))
        return data


class _StreamTransport(asyncio.Transport):
    """``request.transport`` of an HTTP/2 request: the TLS connection's facts, this stream's
    fate. The forwarder aborts the transport when a response cannot complete; on HTTP/2 that
    must reset one stream, not the connection carrying a thousand others."""

    __slots__ = ("_stream",)

    def __init__(self, stream: _H2Stream) -> None:
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


class _H2Stream(AbstractStreamWriter):
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
        "task",
    )

    def __init__(self, connection: _H2Protocol, stream_id: int) -> None:
        self.connection = connection
        self.id = stream_id
        self.payload: StreamReader = EMPTY_PAYLOAD
        self.task: asyncio.Task[None] | None = None
        #: Reset (either side) or both halves ended: nothing more goes out.
        self.closed = False
        self._head: list[tuple[bytes, bytes]] | None = None
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
        return None if self.closed else _StreamTransport(self)

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
        leaves in one TLS record with its body."""
        status = status_line.split(" ", 2)[1]
        head = [(b":status", status.encode())]
        for name, value in headers.items():
            lower = name.lower()
            if lower not in _CONNECTION_HEADERS:
                head.append((lower.encode(), value.encode("utf-8", "surrogateescape")))
        self._head = head

    def send_headers(self) -> None:
        if self._head is not None and not self.closed:
            self._send_head(end_stream=False)
            self.connection.flush_soon()

    def _send_head(self, *, end_stream: bool) -> None:
        head, self._head = self._head, None
        if head is None:
            return
        try:
            self.connection.h2.send_headers(self.id, head, end_stream=end_stream)
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
        if self.task is not None:
            self.task.cancel()


class _H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection: h2's state machine over the TLS transport, one task per stream."""

    def __init__(self, listener: Http2Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        settings = listener.settings
        self.h2 = _Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # What we send is built here (lower-case names, no connection headers, values
                # aiohttp already checked): validating it again costs more than the request.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                # What we receive is checked by http2_headers.request_message, in the one pass
                # that builds the aiohttp request (cookies joined there too): h2's generator
                # chain over every header cost more than building the request.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        self.h2.encoder = LiteralEncoder()
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
            },
        )
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.streams: dict[int, _H2Stream] = {}
        #: Streams whose writer waits for flow-control credit.
        self.blocked: set[_H2Stream] = set()
        self.ssl_context: Any = None
        self.peername: Any = None
        self.sockname: Any = None
        self._loop = asyncio.get_running_loop()
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._conn_unacked = 0
        self._draining = False
        self._last_stream_id = 0
        self._closed = False
        #: Frame-header scanner state (see :meth:`_frames_fit`): bytes until the next header
        #: (the client preface first), and a header split across reads.
        self._skip = 24  # the client connection preface
        self._partial = b""
        self._idle_timer: asyncio.TimerHandle | None = None
        #: DATA bytes handed to h2 since the last write to the transport.
        self.unflushed = 0
        self._flush_pending = False
        #: Request body bytes fed to this connection's streams and not read by their handlers.
        self.buffered = 0

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # As aiohttp does for HTTP/1.1 (and Go for every connection): small frames (a
        # response head, a watch event) go out at once instead of waiting behind Nagle.
        tcp_nodelay(self.transport, True)
        self.ssl_context = transport.get_extra_info("sslcontext")
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.h2.initiate_connection()
        extra = self.listener.settings.connection_window - self.h2.inbound_flow_control_window
        if extra > 0:
            self.h2.increment_flow_control_window(extra)
        self.flush()
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._frames_fit(data):
            logger.info("HTTP/2 connection from %s: frame larger than allowed", self.peername)
            self.close(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
            return
        try:
            events = self.h2.receive_data(data)
            for event in events:
                self._dispatch(event)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued the GOAWAY with the matching code; send it and hang up.
            logger.info("HTTP/2 connection from %s: protocol error: %s", self.peername, exc)
            self.flush()
            self._abandon()
            return
        except Exception:  # never into the event loop: this connection ends, the hub serves on
            logger.exception("HTTP/2 connection from %s: internal error", self.peername)
            self.close(h2.errors.ErrorCodes.INTERNAL_ERROR)
            return
        self.flush_soon()

    def _frames_fit(self, data: bytes) -> bool:
        """Check every frame header against our maximum frame size as it arrives.

        h2 checks a frame's length only once the whole frame is buffered, so a header
        announcing 16 MiB would make the hub buffer that much first; this bounds it to one
        frame of the size we allow.
        """
        limit = self.h2.max_inbound_frame_size
        pos, size = 0, len(data)
        while pos < size:
            if self._skip:
                step = min(self._skip, size - pos)
                self._skip -= step
                pos += step
                continue
            need = 9 - len(self._partial)
            self._partial += data[pos : pos + need]
            pos += need
            if len(self._partial) < 9:
                break
            length = int.from_bytes(self._partial[:3], "big")
            self._partial = b""
            if length > limit:
                return False
            self._skip = length
        return True

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is None and not self._closed:
            timeout = self.listener.settings.idle_timeout
            self._idle_timer = self._loop.call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if not self.streams:
            self.close(h2.errors.ErrorCodes.NO_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.transport = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        error = ConnectionResetError("the HTTP/2 connection was lost")
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._drain_waiters.clear()
        for stream in list(self.streams.values()):
            stream.peer_reset()
        self.listener._connection_closed(self)

    def pause_writing(self) -> None:
        # A client that does not read what we send also stops being read: control frames
        # (PING and SETTINGS acks, resets) cannot pile up in the write buffer.
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- used by streams ---------------------------------------------------------------------

    def flush(self) -> None:
        """Write h2's output to the TLS transport now."""
        self.unflushed = 0
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def flush_soon(self) -> None:
        """Write h2's output at the end of this loop iteration: everything the streams and
        the reader produce until then leaves in one TLS write."""
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush_now)

    def flush_ended(self) -> None:
        """A response has ended: alone on its connection it is written now (a sequential
        client gets it one loop iteration sooner); beside other streams it goes out with
        theirs at the end of the iteration."""
        if len(self.streams) <= 1:
            self.flush()
        else:
            self.flush_soon()

    def _flush_now(self) -> None:
        self._flush_pending = False
        self.flush()

    async def writable(self) -> None:
        """Wait while the TLS transport's write buffer is above its high-water mark."""
        if self._closed:
            raise ConnectionResetError("the HTTP/2 connection is closed")
        if not self._write_paused:
            return
        waiter = self._loop.create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def open_stream_window(self, stream_id: int, increment: int) -> None:
        if self._closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.h2.increment_flow_control_window(increment, stream_id=stream_id)
            self.flush_soon()

    def reset_stream(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        if self._closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.h2.reset_stream(stream_id, code)
            self.flush_soon()

    # --- events ------------------------------------------------------------------------------

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._on_data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.payload.feed_eof()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.peer_reset()
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id == 0:
                self._wake_blocked()
            else:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.window_opened()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._wake_blocked()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing after the peer's GOAWAY: the streams cannot finish here.
            self._abandon()

    def _wake_blocked(self) -> None:
        """Connection credit or a larger initial window: only the streams waiting for credit
        can use it (an aggregator's connection may carry a thousand idle watches)."""
        for stream in list(self.blocked):
            stream.window_opened()

    def _on_data(self, event: h2.events.DataReceived) -> None:
        size = event.flow_controlled_length
        self._conn_unacked += size
        stream = self.streams.get(event.stream_id)
        padding = size - len(event.data)
        if stream is None or stream.closed or stream.payload is EMPTY_PAYLOAD:
            # Nobody reads it any more: give the credit straight back.
            if size:
                self.open_stream_window(event.stream_id, size)
        else:
            if padding:
                stream.credit(padding)
            if event.data:
                self.buffered += len(event.data)
                stream.payload.feed_data(event.data)
        self._return_connection_credit()

    def body_read(self, size: int) -> None:
        self.buffered -= size
        self._return_connection_credit()

    def _return_connection_credit(self) -> None:
        """Connection credit goes back as bytes arrive, so that each stream's window, not the
        connection's, bounds what a slow handler holds up; past ``max_buffered`` unread bytes
        on this connection it waits for handlers to read."""
        settings = self.listener.settings
        if (
            self._conn_unacked >= settings.connection_window // 4
            and self.buffered <= settings.max_buffered
            and not self._closed
        ):
            increment, self._conn_unacked = self._conn_unacked, 0
            self.h2.increment_flow_control_window(increment)
            self.flush_soon()

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        self._last_stream_id = max(self._last_stream_id, stream_id)
        settings = self.listener.settings
        if self._draining or len(self.streams) >= settings.max_concurrent_streams:
            # Through the guarded reset: the client may have reset this stream in the same
            # read (h2 then no longer knows it), and that must not end the connection.
            self.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        stream = _H2Stream(self, stream_id)
        self.listener.h2_streams_total += 1
        try:
            message, problem = request_message(event.headers, ended=event.stream_ended is not None)
        except MalformedRequest as exc:
            # RFC 9113 8.1.1: a stream error; the connection and its other streams go on.
            logger.info("HTTP/2 request from %s: malformed: %s", self.peername, exc)
            self.reset_stream(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        if problem is not None:
            self.streams[stream_id] = stream
            self._start(stream, self._refuse(stream, problem))
            return
        assert message is not None
        if event.stream_ended is None:
            stream.payload = _Payload(stream, settings.stream_window, self._loop)
        self.streams[stream_id] = stream
        self._start(stream, self._serve(stream, message))

    def _start(self, stream: _H2Stream, handler: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(handler)
        task.add_done_callback(functools.partial(self._handler_ended, stream))
        stream.task = task

    def _handler_ended(self, stream: _H2Stream, _task: asyncio.Task[None]) -> None:
        # A handler cancelled before its first step never runs its body, nor its ``finally``:
        # that happens when the client resets a stream in the same read that opened it (the
        # "rapid reset" pattern). Without this its place would never be freed, and a
        # connection with max_concurrent_streams such places would refuse every request.
        if self.streams.get(stream.id) is stream:
            self._stream_done(stream)

    async def _serve(self, stream: _H2Stream, message: RawRequestMessage) -> None:
        """What aiohttp's RequestHandler does for one request, for one stream."""
        server = self.listener.server
        task = stream.task  # set by _on_request before this coroutine's first step
        assert task is not None
        request = server.request_factory(
            message, stream.payload, cast(RequestHandler, stream), stream, task
        )
        try:
            try:
                response = await server.request_handler(request)
            except web.HTTPException as exc:
                response = exc
            except (asyncio.CancelledError, ConnectionError):
                raise
            except Exception:
                logger.exception("unhandled error serving %s %s", message.method, message.path)
                response = StatusError(500, "internal error").to_response()
            await response.prepare(request)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            stream.reset(h2.errors.ErrorCodes.CANCEL)
        finally:
            request._task = None  # type: ignore[assignment]  # break the cycle, as aiohttp does
            self._stream_done(stream)

    async def _refuse(self, stream: _H2Stream, error: StatusError) -> None:
        """Answer a request the application must not see (an upgrade) with a Status."""
        try:
            await stream.write_headers(
                f"HTTP/2 {error.code} {_reason(error.code)}",
                CIMultiDict({istr("Content-Type"): "application/json"}),
            )
            await stream.write_eof(json.dumps(error.to_status()).encode())
        except (asyncio.CancelledError, ConnectionError):
            stream.reset(h2.errors.ErrorCodes.CANCEL)
        finally:
            self._stream_done(stream)

    def _stream_done(self, stream: _H2Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        if stream.payload is not EMPTY_PAYLOAD:
            unread = stream.payload.total_bytes - stream.body_read
            if unread > 0:  # the handler ended without reading it all
                self.body_read(unread)
        if not stream.closed:
            if not stream.ended:
                stream.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            elif not stream.payload.is_eof() and stream.payload is not EMPTY_PAYLOAD:
                # Answered before the client finished its body: ask it to stop (RFC 9113 8.1).
                stream.reset(h2.errors.ErrorCodes.NO_ERROR)
        stream.closed = True
        stream.task = None
        if not self.streams:
            if self._draining:
                self.close(h2.errors.ErrorCodes.NO_ERROR)
            else:
                self._arm_idle_timer()

    # --- ends --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful GOAWAY: no new streams, those in flight finish.

        h2 moves its connection to CLOSED when it sends a GOAWAY (then nothing more can be
        sent on any stream), so this GOAWAY is written as a raw frame beside h2's output.
        """
        if self._draining or self._closed:
            return
        self._draining = True
        self.flush()
        frame = GoAwayFrame(
            stream_id=0,
            last_stream_id=self.h2.highest_inbound_stream_id,
            error_code=h2.errors.ErrorCodes.NO_ERROR,
        )
        if self.transport is not None:
            self.transport.write(frame.serialize())
        if not self.streams:
            self.close(h2.errors.ErrorCodes.NO_ERROR)

    def close(self, code: h2.errors.ErrorCodes) -> None:
        """GOAWAY with ``code`` and close the connection (after its buffered bytes)."""
        if self._closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self.flush()
        self._abandon()

    def _abandon(self) -> None:
        self._closed = True
        for stream in list(self.streams.values()):
            stream.peer_reset()
        if self.transport is not None:
            self.transport.close()


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Error"
