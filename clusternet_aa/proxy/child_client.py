"""A lean pooled HTTP/1.1 client for the agent's requests to its child API server.

Why not aiohttp's client: at one request at a time, its per-request machinery (request and
response objects, header multidicts, the connector's bookkeeping, a payload stream, a writer
object) cost the agent about as much Python time as everything else on its side of the tunnel
together. Here a request is one pre-built head written to a pooled keep-alive connection, the
response is parsed by httptools (llhttp, in C), and body chunks go straight into the tunnel
stream. When the head, the body and the end arrive in one read (a small GET), the handler wakes
once.

Behaviour kept from the aiohttp path: keep-alive connections reused per origin (at most
``max_idle`` idle ones kept per origin; in use, as many as there are requests, because every
watch and ``logs -f`` holds its connection), request bodies streamed with flow control both
ways (Content-Length when the caller gave one, chunked otherwise), responses passed on as they
arrive (chunked, Content-Length or until close), no decompression, no redirects followed.
Errors come out as :class:`ChildConnectionError` (an ``OSError``) so the executor maps them to
stream resets as before.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools  # type: ignore[import-untyped]

from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream

#: Unread response body bytes above which the child connection stops being read.
_READ_HIGH_WATER = 256 * 1024
#: Request body bytes queued in the child connection above which the upload waits.
_WRITE_HIGH_WATER = 256 * 1024
#: Methods that carry no body and need no ``Content-Length: 0`` when the caller sent none.
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"})
#: Response heads larger than this are refused (a broken or hostile child).
MAX_RESPONSE_HEAD = 64 * 1024


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


@dataclass
class ChildResponse:
    """The response head, as the tunnel passes it on."""

    status: int
    headers: list[tuple[str, str]]
    content_length: int | None


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response being read on it.

    The parser callbacks only record what arrived; the request's coroutine is woken through
    one future per wait, so a burst of callbacks from one read costs one wakeup.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._parser: Any = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._head_only = False
        self._reset_message()

    def _reset_message(self) -> None:
        self.response: ChildResponse | None = None
        self.body: list[bytes] = []
        self._buffered = 0
        self._header_list: list[tuple[str, str]] = []
        self._head_size = 0
        self.complete = False
        self.keep_alive = False
        self._until_eof = False
        self._informational = False
        self.received_any = False
        self.error: BaseException | None = None

    # -------------------------------------------------------------- request side

    def begin(self, head_only: bool) -> None:
        """Get ready for the response of a request about to be written."""
        self._reset_message()
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)

    async def wait(self) -> None:
        """Until something new arrives: the head, body bytes, the end, or an error."""
        if self.error is not None or self.complete or self.body:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

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
            waiter = asyncio.get_running_loop().create_future()
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
        if self._parser is None:
            # Nothing was asked: a server that talks out of turn cannot be kept.
            self.close()
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail_protocol("the child switched protocols on a plain request")
        except httptools.HttpParserError as exc:
            self._fail_protocol(f"bad response from the child: {exc}")
        if self.complete:
            self._parser = None
        self._wake()

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
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_RESPONSE_HEAD:
            raise ChildConnectionError("the child's response head is too large")
        self._header_list.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status: int = self._parser.get_status_code()
        if 100 <= status < 200:
            # 100 Continue and other interim answers: the real head follows.
            self._informational = True
            self._header_list = []
            self._head_size = 0
            return
        length: int | None = None
        chunked = False
        for name, value in self._header_list:
            lower = name.lower()
            if lower == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif lower == "transfer-encoding":
                chunked = "chunked" in value.lower()
        self.keep_alive = bool(self._parser.should_keep_alive())
        self.response = ChildResponse(status, self._header_list, length)
        no_body = self._head_only or status in (204, 304)
        self._until_eof = not no_body and length is None and not chunked
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

    def _ended(self, exc: Exception | None) -> None:
        self.lost = True
        if self.response is not None and self._until_eof and not self.complete:
            self.complete = True  # the body ran until the connection closed
            self.keep_alive = False
        elif not self.complete and self._parser is not None and self.error is None:
            reason = f": {exc}" if exc is not None else ""
            self.error = ChildConnectionError(f"the child closed the connection{reason}")
        self._wake()

    def _fail_protocol(self, message: str) -> None:
        if self.error is None:
            self.error = ChildConnectionError(message)
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


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
        self._closed = False

    async def close(self) -> None:
        """Close the idle connections; connections in use close when their exchange ends."""
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()

    def idle_connections(self, origin: Origin) -> int:
        return len(self._idle.get(origin, ()))

    async def forward(
        self,
        stream: TunnelStream,
        origin: Origin,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        has_body: bool,
        on_head: Callable[[ChildResponse], None],
    ) -> None:
        """Send the request and pass the response into ``stream``: ``on_head`` sends the head,
        the body is written as it arrives, then the stream's end.

        Raises :class:`ChildConnectionError` (or ``OSError``/``TimeoutError`` from the
        connect) before ``on_head`` ran or after, and :class:`StreamResetError` when the hub
        gave up on the stream.
        """
        head, chunked = _request_head(method, target, origin.authority, headers, has_body)
        conn, reused = await self._acquire(origin)
        upload: asyncio.Task[None] | None = None
        try:
            conn.begin(method == "HEAD")
            if reused and not has_body:
                # The child may have closed this pooled connection just now; then it fails
                # before any answer, and a bodiless request is safe to send again.
                sent = not conn.lost
                if sent:
                    conn.write(head)
                    await conn.wait()
                if not sent or (conn.error is not None and not conn.received_any):
                    conn.close()
                    conn, _ = await self._connect(origin)
                    conn.begin(method == "HEAD")
                    conn.write(head)
            else:
                conn.write(head)
            if has_body:
                upload = asyncio.ensure_future(_upload(stream, conn, chunked))
            await self._exchange(stream, conn, on_head)
            if upload is not None and not upload.done():
                # The child answered before the whole body arrived: the connection is
                # mid-request and cannot be reused.
                conn.close()
        except BaseException:
            conn.close()
            raise
        finally:
            if upload is not None and not upload.done():
                upload.cancel()
        self._release(conn)

    async def _exchange(
        self,
        stream: TunnelStream,
        conn: _Connection,
        on_head: Callable[[ChildResponse], None],
    ) -> None:
        while conn.response is None:
            if conn.error is not None:
                raise conn.error
            await conn.wait()
        on_head(conn.response)
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

    async def _acquire(self, origin: Origin) -> tuple[_Connection, bool]:
        pool = self._idle.get(origin)
        while pool:
            conn = pool.pop()
            if not conn.lost and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
            conn.close()
        return await self._connect(origin)

    async def _connect(self, origin: Origin) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, conn = await loop.create_connection(
                lambda: _Connection(origin),
                origin.host,
                origin.port,
                ssl=origin.ssl_context,
                server_hostname=origin.host if origin.ssl_context is not None else None,
            )
        if self._on_connect is not None:
            self._on_connect()
        return conn, False

    def _release(self, conn: _Connection) -> None:
        if not conn.reusable or self._closed:
            conn.close()
            return
        pool = self._idle.setdefault(conn.origin, deque())
        if len(pool) >= self._max_idle:
            conn.close()
            return
        pool.append(conn)


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


def _request_head(
    method: str, target: str, authority: str, headers: list[tuple[str, str]], has_body: bool
) -> tuple[bytes, bool]:
    """The request line and headers, and whether the body goes chunked."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {authority}\r\n"]
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
    elif not has_body and not has_length and method not in _BODYLESS:
        lines.append("Content-Length: 0\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1"), chunked
