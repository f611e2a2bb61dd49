"""A lean pooled HTTP/1.1 client for the agent's requests to its child API server.

Why not aiohttp's client: at one request at a time, its per-request machinery (request and
response objects, header multidicts, the connector's bookkeeping, a payload stream, a writer
object) cost the agent about as much Python time as everything else on its side of the tunnel
together. Here a request is one pre-built head written to a pooled keep-alive connection, the
response is parsed by httptools (llhttp, in C), and body chunks go straight into the tunnel
stream.

When the whole answer arrives in one read (a small GET), the protocol callback itself puts the
head, the body and the end into the tunnel stream: the session sends them as one message in the
same loop pass as the request coroutine's single wakeup, instead of one pass later (a loop pass
with cold caches is a good part of the agent's time per request at low concurrency). The
response headers are filtered into their tunnel form as the parser reports them, so nothing
walks the header list again.

Behaviour kept from the aiohttp path: keep-alive connections reused per origin (at most
``max_idle`` idle ones kept per origin; in use, as many as there are requests, because every
watch and ``logs -f`` holds its connection), request bodies streamed with flow control both
ways (Content-Length when the caller gave one, chunked otherwise), responses passed on as they
arrive (chunked, Content-Length or until close), no decompression, no redirects followed.
A child that cannot be reached resets the stream with ``DIAL_FAILED``; a child connection that
fails after the response head was passed on resets it with ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools  # type: ignore[import-untyped]

from clusternet_aa.proxy import headers as hop
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream

#: HEADERS metadata key with the response's Content-Length, when it had one.
CONTENT_LENGTH_KEY = "content_length"
#: Unread response body bytes above which the child connection stops being read.
_READ_HIGH_WATER = 256 * 1024
#: Request body bytes queued in the child connection above which the upload waits.
_WRITE_HIGH_WATER = 256 * 1024
#: Methods that carry no body and need no ``Content-Length: 0`` when the caller sent none.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"})
#: Response heads larger than this are refused (a broken or hostile child).
MAX_RESPONSE_HEAD = 64 * 1024
#: Response header names (lowercase bytes, as the parser reports them) that do not go back
#: through the tunnel: hop-by-hop ones, and Content-Length, which the hub's writer sets.
_NOT_FORWARDED = frozenset(name.encode() for name in hop.HOP_BY_HOP) | {b"content-length"}
_UPGRADE_KEEP = frozenset({"connection", "upgrade"})
#: Response header names, as the child spelled them, that go through the tunnel -> their
#: tunnel form. A child answers with the same few names over and over; bounded in entries and
#: name length (names are the child's to choose), and never holds a name that is not forwarded.
_FORWARDED_NAMES: dict[bytes, str] = {}
_NAME_CACHE_SIZE = 256
#: Bytes of a response that cannot hold header fields over the head limit (see
#: :meth:`_Connection._start_counting`).
_UNCOUNTED_FEED = MAX_RESPONSE_HEAD // 2
_NAME_CACHE_LENGTH = 64


class ChildConnectionError(OSError):
    """The child connection failed or answered something that is not HTTP/1.1."""


@dataclass(frozen=True)
class Origin:
    """Where a pooled connection goes; connections are reused only for the same origin."""

    host: str
    port: int
    #: None for plain http.
    ssl_context: ssl.SSLContext | None
    #: ``host[:port]`` as the Host header carries it.
    authority: str


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response being read on it.

    The parser callbacks record what arrived; a response complete in one read goes into the
    stream from :meth:`data_received` (see the module docstring), anything else is passed on by
    the request's coroutine, woken through one future per wait, so a burst of callbacks from
    one read costs one wakeup.
    """

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        #: Kept rather than asked for: ``asyncio.get_running_loop()`` is a ``getpid`` system
        #: call (its fork check) on every call.
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.lost = False
        #: Kept across the keep-alive responses of the connection (llhttp parses one message
        #: after the other); dropped after a HEAD answer, whose body it would wait for.
        self._parser: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._head_only = False
        #: Between :meth:`begin` and the response's end: bytes outside that are out of turn.
        self._expecting = False
        self._stream: TunnelStream | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self.status = 0
        #: The response headers in their tunnel form (see :data:`_NOT_FORWARDED`).
        self.headers: frames.Headers = ()
        self.content_length: int | None = None
        #: The response head has been parsed (``status`` and ``headers`` are set).
        self.has_head = False
        #: The head went into the stream (a failure after it is the child's, mid-answer).
        self.head_sent = False
        #: The whole response went into the stream from the protocol callback.
        self.delivered = False
        #: Why putting the response into the stream from the callback failed.
        self.failure: StreamResetError | None = None
        self.body: list[bytes] = []
        self._buffered = 0
        self._header_list: list[tuple[str, str]] = []
        self._connection_values: list[bytes] | None = None
        self._chunked = False
        #: Field sizes as the head limit counts them (name + value + 4): all of them while
        #: counting, otherwise those not in the header list (see :meth:`_start_counting`).
        self._head_size = 0
        #: Bytes fed to the parser since :meth:`begin`, and whether fields are counted.
        self._fed = 0
        self._counting = False
        self.complete = False
        self.keep_alive = False
        self._until_eof = False
        self._informational = False
        self.received_any = False
        self.error: BaseException | None = None

    # -------------------------------------------------------------- request side

    def begin(self, stream: TunnelStream, head_only: bool) -> None:
        """Get ready for the response, to ``stream``, of a request about to be written."""
        self._reset_message()
        self._stream = stream
        self._head_only = head_only
        self._expecting = True
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)

    async def wait(self) -> None:
        """Until something new arrives: the head, body bytes, the end, or an error."""
        if self.error is not None or self.complete or self.body:
            return
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def send_head(self) -> None:
        """Put the response head into the stream (raises StreamResetError if it was reset)."""
        stream = self._stream
        assert stream is not None, "begin() names the stream"
        length = self.content_length
        metadata = {CONTENT_LENGTH_KEY: length} if length is not None and length >= 0 else None
        stream.send_headers(self.status, self.headers, metadata)
        self.head_sent = True

    def take_body(self) -> list[bytes]:
        """The body chunks received so far; reading resumes if it was paused for them."""
        chunks, self.body = self.body, []
        self._buffered = 0
        if self._read_paused and self.transport is not None and not self.lost:
            self._read_paused = False
            self.transport.resume_reading()
        return chunks

    def write(self, data: bytes) -> None:
        if self.transport is None or self.lost:
            raise ChildConnectionError("the child connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the connection's write buffer is above its high-water mark."""
        if self.lost:
            raise ChildConnectionError("the child connection is closed")
        if self._write_paused:
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None
            if self.lost:
                raise ChildConnectionError("the child connection is closed")

    def fail(self, error: BaseException) -> None:
        """End the current exchange with ``error`` (the upload failed, for example)."""
        if self.error is None:
            self.error = error
        self._wake()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
        )

    # -------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if not self._expecting:
            # Nothing was asked: a server that talks out of turn cannot be kept.
            self.close()
            return
        self.received_any = True
        fed = self._fed + len(data)
        self._fed = fed
        if fed > _UNCOUNTED_FEED and not self._counting:
            self._start_counting()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_protocol("the child switched protocols on a plain request")
        except httptools.HttpParserError as exc:
            self._fail_protocol(f"bad response from the child: {exc}")
        if self.complete:
            self._expecting = False
            if self._head_only:
                self._parser = None
            if not self.head_sent and self._stream is not None:
                self._deliver()
        waiter = self._waiter  # _wake, inlined: this runs once per response
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool | None:
        self._ended(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response to one request: the connection is out of step with us.
            raise ChildConnectionError("the child sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Most names were seen before: one lookup instead of lowering, a set test and a decode.
        forwarded = _FORWARDED_NAMES.get(name)
        if self._counting:
            self._head_size += len(name) + len(value) + 4
            if self._head_size > MAX_RESPONSE_HEAD:
                raise ChildConnectionError("the child's response head is too large")
        if forwarded is not None:
            self._header_list.append((forwarded, value.decode("latin-1")))
            return
        lower = name.lower()
        if lower not in _NOT_FORWARDED:
            forwarded = name.decode("latin-1")
            if len(name) <= _NAME_CACHE_LENGTH and len(_FORWARDED_NAMES) < _NAME_CACHE_SIZE:
                _FORWARDED_NAMES[name] = forwarded
            self._header_list.append((forwarded, value.decode("latin-1")))
            return
        if not self._counting:
            # Out of the header list: counted now, as _start_counting expects.
            self._head_size += len(name) + len(value) + 4
        if lower == b"content-length":
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = None
        elif lower == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()
        elif lower == b"connection":
            if self._connection_values is None:
                self._connection_values = []
            self._connection_values.append(value)

    def on_headers_complete(self) -> None:
        status: int = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue and other interim answers: the real head follows.
            self._informational = True
            self._header_list = []
            self._connection_values = None
            self.content_length = None
            self._chunked = False
            self._head_size = 0
            return
        headers = self._header_list
        if self._connection_values is not None:
            headers = _without_connection_named(headers, self._connection_values)
        self.status = status
        self.headers = tuple(headers)
        self.has_head = True
        self.keep_alive = bool(self._parser.should_keep_alive())
        no_body = self._head_only or status in (204, 304)
        self._until_eof = not no_body and self.content_length is None and not self._chunked
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)
        if self._buffered > _READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True

    # -------------------------------------------------------------- internals

    def _deliver(self) -> None:
        """The whole response is here: head, body and end into the stream, now."""
        stream = self._stream
        assert stream is not None
        length = self.content_length
        body, self.body = self.body, []
        self._buffered = 0
        try:
            # Head, body and end in one call: the session flushes them once (see
            # TunnelStream.answer); it raises before queueing anything if the stream was reset.
            stream.answer(
                self.status,
                self.headers,
                {CONTENT_LENGTH_KEY: length} if length is not None and length >= 0 else None,
                body,
            )
        except StreamResetError as exc:
            self.failure = exc
            return
        self.head_sent = True
        self.delivered = True

    def _ended(self, exc: Exception | None) -> None:
        self.lost = True
        if self.has_head and self._until_eof and not self.complete:
            self.complete = True  # the body ran until the connection closed
            self.keep_alive = False
        elif not self.complete and self._expecting and self.error is None:
            reason = f": {exc}" if exc is not None else ""
            self.error = ChildConnectionError(f"the child closed the connection{reason}")
        self._expecting = False
        self._wake()

    def _start_counting(self) -> None:
        """Count every header field against :data:`MAX_RESPONSE_HEAD` from now on.

        Why fields are not always counted: a field costs at most twice the bytes it takes in
        the message (``name + value + 4`` against at least ``name:value`` and a line end), so
        while at most :data:`_UNCOUNTED_FEED` bytes were fed since :meth:`begin`, the fields
        cannot exceed the limit, and the common field (a known forwarded name) skips its
        accounting. Before the bytes that could cross that bound are fed, this adds the
        fields in the header list (latin-1 keeps their lengths) to the others, already
        counted: the total is then exactly what counting every field would have reached, so
        the limit stops the parse at the same field as always."""
        self._head_size += sum(len(name) + len(value) + 4 for name, value in self._header_list)
        self._counting = True

    def _fail_protocol(self, message: str) -> None:
        if self.error is None:
            self.error = ChildConnectionError(message)
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _without_connection_named(
    headers: list[tuple[str, str]], values: list[bytes]
) -> list[tuple[str, str]]:
    """``headers`` less those a ``Connection`` header names (hop-by-hop as well)."""
    named = {
        token.strip().lower()
        for value in values
        for token in value.decode("latin-1").split(",")
        if token.strip()
    } - _UPGRADE_KEEP
    if not named:
        return headers
    return [(name, value) for name, value in headers if name.lower() not in named]


class ChildClient:
    """Keep-alive connections per origin, and the request/response exchange over them."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        max_idle: int = 32,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._max_idle = max_idle
        self._on_connect = on_connect
        self._idle: dict[Origin, deque[_Connection]] = {}
        #: The last origin asked for and its idle pool: the executor passes the same Origin
        #: object for its own API server every time, and hashing the dataclass is a Python call.
        self._last_origin: Origin | None = None
        self._last_pool: deque[_Connection] = deque()
        self._closed = False

    async def close(self) -> None:
        """Close the idle connections; connections in use close when their exchange ends."""
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
        self._last_origin = None

    def idle_connections(self, origin: Origin) -> int:
        return len(self._idle.get(origin, ()))

    async def forward(
        self,
        stream: TunnelStream,
        origin: Origin,
        method: str,
        target: str,
        tail: bytes,
        *,
        chunked: bool,
        has_body: bool,
    ) -> None:
        """Send the request (``tail`` is the rest of the head after the request line, see
        :func:`request_tail`) and pass the response into ``stream``: head, body as it arrives,
        end.

        A failure to reach the child, or of the child connection, resets the stream
        (``DIAL_FAILED`` before the response head went out, ``INTERNAL_ERROR`` after); a stream
        the hub reset ends the exchange quietly. The child connection is not reused then.
        """
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + tail
        head_only = method == "HEAD"
        conn: _Connection | None = None
        upload: asyncio.Task[None] | None = None
        try:
            conn = self._take_idle(origin)
            if conn is not None:
                conn.begin(stream, head_only)
                conn.write(head)
                if not has_body:
                    # The child may have closed this pooled connection just now; then it fails
                    # before any answer, and a bodiless request is safe to send again.
                    await conn.wait()
                    if conn.error is not None and not conn.received_any:
                        conn.close()
                        conn = None
            if conn is None:
                conn = await self._connect(origin)
                conn.begin(stream, head_only)
                conn.write(head)
            if has_body:
                upload = asyncio.ensure_future(_upload(stream, conn, chunked))
            if not conn.delivered:
                await _exchange(stream, conn)
            if upload is not None and not upload.done():
                # The child answered before the whole body arrived: the connection is
                # mid-request and cannot be reused.
                conn.close()
        except StreamResetError:
            if conn is not None:
                conn.close()
            return  # the hub gave up on the stream
        except (OSError, TimeoutError) as exc:
            code = ErrorCode.DIAL_FAILED
            if conn is not None:
                conn.close()
                if conn.head_sent:
                    code = ErrorCode.INTERNAL_ERROR
            stream.reset(code, f"child apiserver: {type(exc).__name__}: {exc}"[:200])
            return
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            if upload is not None and not upload.done():
                upload.cancel()
        self._release(conn)

    def _pool(self, origin: Origin) -> deque[_Connection]:
        """The idle pool of ``origin`` (made on first use)."""
        if origin is self._last_origin:
            return self._last_pool
        pool = self._idle.get(origin)
        if pool is None:
            pool = self._idle[origin] = deque()
        self._last_origin, self._last_pool = origin, pool
        return pool

    def _take_idle(self, origin: Origin) -> _Connection | None:
        pool = self._last_pool if origin is self._last_origin else self._pool(origin)
        while pool:
            conn = pool.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(origin, loop),
                origin.host,
                origin.port,
                ssl=origin.ssl_context,
                server_hostname=origin.host if origin.ssl_context is not None else None,
            )
        if self._on_connect is not None:
            self._on_connect()
        return conn

    def _release(self, conn: _Connection) -> None:
        conn._stream = None  # the stream is done with; an idle connection keeps none alive
        if not conn.reusable or self._closed:
            conn.close()
            return
        origin = conn.origin
        pool = self._last_pool if origin is self._last_origin else self._pool(origin)
        if len(pool) >= self._max_idle:
            conn.close()
            return
        pool.append(conn)


async def _exchange(stream: TunnelStream, conn: _Connection) -> None:
    """Pass the response into ``stream`` unless the protocol callback already did."""
    while not conn.has_head:
        if conn.error is not None:
            raise conn.error
        await conn.wait()
    if conn.delivered:
        return
    if conn.failure is not None:
        raise conn.failure
    conn.send_head()
    while True:
        chunks = conn.take_body()
        for chunk in chunks:
            stream.write(chunk)
        if chunks:
            await stream.drain()
            continue  # more may have arrived, and the end with it, while we waited
        if conn.complete:
            break
        if conn.error is not None:
            raise conn.error
        await conn.wait()
    stream.write_eof()


async def _upload(stream: TunnelStream, conn: _Connection, chunked: bool) -> None:
    """Copy the request body from the stream to the child, waiting for room both ways."""
    try:
        async for chunk in stream:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await conn.drain()
        if chunked:
            conn.write(b"0\r\n\r\n")
    except (StreamResetError, ChildConnectionError) as exc:
        conn.fail(exc)


def request_tail(
    authority: str, headers: list[tuple[str, str]], *, has_body: bool, bodyless: bool
) -> tuple[bytes, bool]:
    """The request head after its request line (Host, the headers, the framing header and the
    blank line), and whether the body goes chunked. ``bodyless``: the method needs no
    ``Content-Length: 0`` when the caller sent no length (see :data:`BODYLESS_METHODS`). The
    caller builds this once for requests that differ only in their request line."""
    lines = [f"Host: {authority}\r\n"]
    has_length = False
    for name, value in headers:
        lower = name.lower()
        if lower == "host" or lower == "transfer-encoding":
            continue
        if lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    chunked = has_body and not has_length
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    elif not has_body and not has_length and not bodyless:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1"), chunked


def _request_head(
    method: str, target: str, authority: str, headers: list[tuple[str, str]], has_body: bool
) -> tuple[bytes, bool]:
    """The whole request head, and whether the body goes chunked."""
    tail, chunked = request_tail(
        authority, headers, has_body=has_body, bodyless=method in BODYLESS_METHODS
    )
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + tail, chunked
