"""TunnelStream: an asyncio reader/writer over one multiplexed stream.

Reads return credit to the peer as the consumer takes bytes, so a slow reader slows only its
own sender. Writes queue bytes in the protocol core; :meth:`TunnelStream.drain` waits until the
stream's queued bytes fall under the high-water mark, which bounds a writer's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode, StreamClosedError, TunnelError

if TYPE_CHECKING:
    from clusternet_aa.tunnel.session import Session


class StreamResetError(TunnelError):
    """The stream was reset (by the peer, by us, or because the session ended)."""

    def __init__(self, code: ErrorCode, reason: str, *, remote: bool) -> None:
        super().__init__(f"stream reset ({code.name}): {reason}", code)
        self.reason = reason
        self.remote = remote


#: Stands for "no metadata given", so each head still gets a fresh dict of its own.
_NO_METADATA: dict[str, Any] = {}


@dataclass(frozen=True)
class ResponseHead:
    status: int
    headers: frames.Headers = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    # One is made per proxied request: writing the instance dict costs about half of the
    # generated frozen ``__init__`` (``object.__setattr__`` per field). Fields, defaults,
    # equality, hashing, repr and immutability stay the dataclass's.
    def __init__(
        self, status: int, headers: frames.Headers = (), metadata: dict[str, Any] = _NO_METADATA
    ) -> None:
        fields = self.__dict__
        fields["status"] = status
        fields["headers"] = headers
        fields["metadata"] = {} if metadata is _NO_METADATA else metadata


class TunnelStream:
    """One stream of a :class:`~clusternet_aa.tunnel.session.Session`.

    For a stream we opened, await :meth:`response` for the peer's head. For a stream the peer
    opened, ``target`` and ``metadata`` say what it wants; answer with :meth:`send_headers`.
    """

    # Slots and lazily made waiters: a hub holds one of these per idle watch, so every
    # per-stream object counts (an asyncio.Event is a deque and a dict; most streams never
    # need a second waiter, and a stream that never receives data never needs a buffer).
    __slots__ = (
        "_buffered",
        "_chunks",
        "_closed_waiter",
        "_eof",
        "_error",
        "_finished",
        "_head_waiters",
        "_loop",
        "_read_waiter",
        "_response",
        "_session",
        "_taken",
        "_write_closed",
        "metadata",
        "stream_id",
        "target",
    )

    def __init__(
        self,
        session: Session,
        stream_id: int,
        *,
        target: frames.Target,
        metadata: dict[str, Any],
    ) -> None:
        self._session = session
        # Futures come from the session's loop: asyncio.get_running_loop() costs a getpid()
        # syscall per call.
        self._loop = session._loop
        self.stream_id = stream_id
        self.target = target
        self.metadata = metadata
        self._chunks: deque[bytes | memoryview] | None = None
        self._buffered = 0
        self._eof = False
        self._error: StreamResetError | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        # The peer's head once it arrived (None before, and again once the opener took it
        # with take_response(), then ``_taken``). Callers waiting for it each wait on a future of
        # their own in ``_head_waiters``, which the session resolves directly: a shared future
        # awaited through ``asyncio.shield`` cost an extra loop iteration per request (the
        # shield's done callback), and a future per stream that is never answered (the streams
        # the peer opens).
        self._response: ResponseHead | None = None
        self._taken = False
        self._head_waiters: list[asyncio.Future[ResponseHead]] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._write_closed = False

    # -------------------------------------------------------------- reading

    async def response(self) -> ResponseHead:
        """The peer's response head (raises :class:`StreamResetError` if reset first)."""
        head = self._response
        if head is not None:
            return head
        if self._taken:
            raise RuntimeError("the response head was taken with take_response()")
        if self._error is not None:
            raise self._error
        # A future per caller: a cancelled caller cancels only its own.
        waiter: asyncio.Future[ResponseHead] = self._loop.create_future()
        waiters = self._head_waiters
        if waiters is None:
            self._head_waiters = [waiter]
        else:
            waiters.append(waiter)
        try:
            return await waiter
        finally:
            waiters = self._head_waiters
            if waiters is not None:
                if len(waiters) == 1 and waiters[0] is waiter:
                    self._head_waiters = None
                elif waiter in waiters:
                    waiters.remove(waiter)

    async def take_response(self) -> ResponseHead:
        """The peer's response head, which the stream then forgets (later :meth:`response`
        calls raise RuntimeError). For an opener that keeps the stream long after reading the
        head, such as the hub forwarding a watch: the decoded headers need not live as long."""
        head = await self.response()
        self._response = None
        self._taken = True
        return head

    async def read(self, max_bytes: int = -1) -> bytes:
        """Up to ``max_bytes`` (all buffered bytes when -1); b"" at end of stream."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            waiter = self._loop.create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                self._read_waiter = None
        chunks = self._chunks
        assert chunks is not None  # the loop above left only with buffered chunks
        if max_bytes < 0 or max_bytes >= self._buffered:
            # One chunk (the usual case in bulk, one DATA frame per wakeup) is returned as it
            # is: ``bytes.join`` of a single bytes object copies nothing.
            data = b"".join(chunks)
            self._chunks = None  # an idle watch keeps no empty buffer (a deque is ~0.6 KiB)
        else:
            # Cut the last chunk as a memoryview, so that only the bytes returned are copied
            # (once, by the join) and the rest stays where it is until the next read.
            parts: list[bytes | memoryview] = []
            need = max_bytes
            while need:
                chunk = chunks[0]
                if len(chunk) > need:
                    view = chunk if type(chunk) is memoryview else memoryview(chunk)
                    chunks[0] = view[need:]
                    parts.append(view[:need])
                    break
                chunks.popleft()
                parts.append(chunk)
                need -= len(chunk)
            data = b"".join(parts)
        self._buffered -= len(data)
        self._session._acknowledge(self.stream_id, len(data))
        return data

    async def readexactly(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < size:
            chunk = await self.read(size - got)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), size)
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (at most the stream window)."""
        return self._buffered

    @property
    def at_eof(self) -> bool:
        """True once the peer ended its side (buffered bytes may remain to be read)."""
        return self._eof

    # -------------------------------------------------------------- writing

    def send_headers(
        self,
        status: int,
        headers: frames.Headers = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if self._error is not None:  # _raise_if_reset, inlined (once per request)
            raise self._error
        self._session._send_headers(self.stream_id, status, headers, metadata)

    def answer(
        self,
        status: int,
        headers: frames.Headers = (),
        metadata: dict[str, Any] | None = None,
        body: Iterable[bytes] = (),
    ) -> None:
        """The whole answer at once: :meth:`send_headers`, :meth:`write` of each chunk of
        ``body`` and :meth:`write_eof`, in one go, so that the session flushes them once
        without first scheduling a flush it would then cancel (which still costs the loop an
        iteration). The bytes are queued like :meth:`write`'s, without waiting for room."""
        if self._error is not None:
            raise self._error
        if self._write_closed:
            raise StreamClosedError(f"stream {self.stream_id}: our side is already ended")
        self._write_closed = True
        self._session._answer(self.stream_id, status, headers, metadata, body)

    def write(self, data: bytes) -> None:
        """Queue bytes; call :meth:`drain` to wait for room."""
        if self._error is not None:  # _raise_if_reset, inlined (once per chunk)
            raise self._error
        self._session._send_data(self.stream_id, data)

    async def drain(self) -> None:
        """Wait until this stream's queued bytes are under the high-water mark."""
        await self._session._wait_writable(self)

    async def write_all(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    def write_eof(self) -> None:
        """Half-close: the peer reads end-of-stream after the bytes already written."""
        if self._write_closed or self._error is not None:
            return
        self._write_closed = True
        self._session._end(self.stream_id)

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abort the stream both ways."""
        if self._error is None:
            self._session._reset(self.stream_id, code, reason)
            self._fail(StreamResetError(code, reason or code.name, remote=False))

    def close(self) -> None:
        """Done with the stream: half-close our side, and reset it if the peer has not
        finished, so that an abandoned response stops using the link."""
        self.write_eof()
        if not self._eof:
            self.reset(ErrorCode.CANCEL, "closed by the reader")

    @property
    def is_reset(self) -> bool:
        return self._error is not None

    async def wait_closed(self) -> None:
        """Wait until both halves are done or the stream was reset."""
        if self._finished:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    # -------------------------------------------------------------- fed by the session

    def _raise_if_reset(self) -> None:
        if self._error is not None:
            raise self._error

    def _wake_reader(self) -> None:
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = deque()
        chunks.append(data)
        self._buffered += len(data)
        waiter = self._read_waiter  # _wake_reader, inlined (once per DATA frame)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed_eof(self) -> None:
        self._eof = True
        waiter = self._read_waiter  # _wake_reader, inlined (once per stream)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _set_response(self, head: ResponseHead) -> None:
        if self._response is not None or self._taken or self._error is not None:
            return  # the first head (or the reset before it) is the answer, as ever
        self._response = head
        waiters = self._head_waiters
        if waiters is not None:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(head)

    def _fail(self, error: StreamResetError) -> None:
        if self._error is None:
            self._error = error
            if self._response is None and not self._taken:
                # response() raises the first error from now on; wake whoever waits for it.
                waiters = self._head_waiters
                if waiters is not None:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(error)
        self._chunks = None
        self._buffered = 0
        self._wake_reader()
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
