"""Session: the asyncio driver of the sans-IO protocol core over a message transport.

Two tasks run per session: a reader (feeds messages to the core and dispatches its events
to streams) and a writer (sends whatever the core has queued, control frames first, while the
link is congested); keepalive runs from a loop timer (``call_at``), not a task, so an idle
session costs one timer handle.

Output normally skips the writer task: whatever is queued in one loop iteration (a request's
OPEN and END, a response's HEADERS, DATA and END) is flushed by one ``call_soon`` callback,
written straight to the transport as one message. A task hop costs a loop iteration and a
coroutine resume with cold caches, which at low concurrency is a good part of a proxied
request's added latency. The writer task takes over only when the transport cannot take a
message without waiting (backpressure) and when the session ends. Likewise input: over a
websocket, each binary message reaches the core from the callback that parsed it
(:meth:`Transport.deliver_to`), and the reader task wakes only for anything else (a close, an
error) or to wait out the control backlog. When the only stream in flight ends its side, its
message goes at once (nothing else will join it).

The core makes every protocol decision; this module only moves bytes and wakes
the right waiters, so it stays small.

Memory stays bounded whatever the peer does: a message is at most the negotiated size; each
stream buffers at most its window of unread bytes and its high-water mark of unsent bytes; and
the reader stops reading while our queue of control frames is long, so a peer that sends but
never reads is slowed by TCP rather than by our RAM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusternet_aa.tunnel.protocol import events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, ConnectionState, Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode, TunnelError
from clusternet_aa.tunnel.protocol.settings import KiB, MiB, Settings
from clusternet_aa.tunnel.streams import ResponseHead, StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import DELIVERED, TEXT, Transport

logger = logging.getLogger(__name__)

# Looked up per message: module globals, not attribute chains.
_CLOSED = ConnectionState.CLOSED
_DataReceived = events.DataReceived
_StreamEnded = events.StreamEnded
_ResponseReceived = events.ResponseReceived
_StreamOpened = events.StreamOpened

#: Called for every stream the peer opens; it owns the stream until it returns.
StreamHandler = Callable[[TunnelStream], Awaitable[None]]

#: Default bytes a writer may queue on one stream before ``drain`` waits.
DEFAULT_HIGH_WATER = 256 * KiB
#: Default control-frame backlog above which the reader pauses.
DEFAULT_CONTROL_BACKLOG = 1 * MiB


class _WriterSignal:
    """An ``asyncio.Event`` for exactly one waiter, the session's writer task.

    ``set`` runs several times per message on a busy tunnel and once per keepalive exchange on
    an idle one; an Event keeps a deque of waiters and a future per wait for the general case,
    this keeps one flag and, while the writer sleeps, one future.
    """

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    async def wait(self) -> None:
        if self._flag:
            return
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None


class SessionClosedError(TunnelError):
    """The session is closed or draining; carries the code it ended with."""


@dataclass
class SessionStats:
    """Counters for metrics and benchmarks."""

    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0


class Session:
    """One multiplexed tunnel over one transport. Use as an async context manager, or call
    :meth:`start` and later :meth:`close`."""

    def __init__(
        self,
        transport: Transport,
        role: Role,
        *,
        settings: Settings | None = None,
        handler: StreamHandler | None = None,
        high_water: int = DEFAULT_HIGH_WATER,
        control_backlog_limit: int = DEFAULT_CONTROL_BACKLOG,
        name: str = "",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._conn = Connection(role, settings, now=self._loop.time())
        self._handler = handler
        self._high_water = high_water
        self._control_backlog_limit = control_backlog_limit
        self.name = name
        self.stats = SessionStats()
        self._streams: dict[int, TunnelStream] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._wakeup = _WriterSignal(self._loop)
        # The pending end-of-iteration flush, cancelled when a direct flush got there first.
        self._flush_handle: asyncio.Handle | None = None
        self._writer_busy = False
        # A message the flush took from the core but the transport could not take at once:
        # the writer task sends it first, before anything else, to keep the order.
        self._held: bytearray | None = None
        self._progress: asyncio.Future[None] = self._loop.create_future()
        self._progress_waiters = 0
        self._hello = asyncio.Event()
        self._closed = asyncio.Event()
        self._finishing = False
        self.close_code: ErrorCode | None = None
        self.close_reason = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if not self._tasks:
            self._wakeup.set()  # the core has queued our HELLO
            # Messages go to the core straight from the transport's receive callback when it
            # can do that (no reader task hop); the reader task still waits for anything else.
            self._transport.deliver_to(self._on_message)
            self._tasks = [
                self._loop.create_task(self._read_loop(), name=f"tunnel-read {self.name}"),
                self._loop.create_task(self._write_loop(), name=f"tunnel-write {self.name}"),
            ]
            self._arm_timer()

    async def __aenter__(self) -> Session:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_ready(self) -> Settings:
        """Wait for the peer's HELLO; raises :class:`SessionClosedError` if the session ends."""
        hello = self._loop.create_task(self._hello.wait())
        closed = self._loop.create_task(self._closed.wait())
        try:
            await asyncio.wait((hello, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            hello.cancel()
            closed.cancel()
        if self._conn.peer_settings is None:
            raise SessionClosedError(self.close_reason or "session closed before HELLO")
        return self._conn.peer_settings

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def is_draining(self) -> bool:
        """True once either side sent GOAWAY: open new streams elsewhere."""
        return self._conn.state is not ConnectionState.OPEN

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(
        self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "", *, grace: float = 10.0
    ) -> None:
        """End the session. NO_ERROR drains first: streams in flight get ``grace`` seconds to
        finish. Any other code resets every stream at once."""
        if self._closed.is_set():
            return
        self.start()
        self._finishing = True
        self._dispatch(self._conn.close(code, reason))
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._closed.wait(), grace)
        except TimeoutError:
            self._dispatch(self._conn.close(ErrorCode.CANCEL, "drain timed out"))
            self._wakeup.set()
            try:
                await asyncio.wait_for(self._closed.wait(), 1.0)
            except TimeoutError:
                await self._shutdown()

    # ------------------------------------------------------------------ streams

    async def open_stream(
        self,
        target: frames.Target,
        metadata: Mapping[str, Any] | None = None,
        *,
        end: bool = False,
    ) -> TunnelStream:
        """Open a stream to the peer (an HTTP request head or a dial target); with ``end``,
        also end our side at once (a request without a body), as :meth:`TunnelStream.write_eof`
        right after would, but without scheduling a flush first: a flush handle that is
        cancelled still costs the loop an iteration."""
        if self._closed.is_set():
            raise SessionClosedError(self.close_reason or "session is closed", self.close_code)
        stream_id = self._conn.open_stream(target, metadata)
        # The metadata went out in the OPEN frame; the opener has its own copy, so the stream
        # keeps none (one dict fewer per idle watch in the hub).
        stream = TunnelStream(self, stream_id, target=target, metadata={})
        self._streams[stream_id] = stream
        self.stats.streams_opened += 1
        if end:
            stream._write_closed = True
            self._end(stream_id)
        else:
            self._want_flush()
        return stream

    def _send_headers(
        self,
        stream_id: int,
        status: int,
        headers: frames.Headers,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        self._conn.send_headers(stream_id, status, headers, metadata)
        self._want_flush()

    def _send_data(self, stream_id: int, data: bytes) -> None:
        self._conn.send_data(stream_id, data)
        self._want_flush()

    def _answer(
        self,
        stream_id: int,
        status: int,
        headers: frames.Headers,
        metadata: Mapping[str, Any] | None,
        body: Iterable[bytes],
    ) -> None:
        conn = self._conn
        conn.send_headers(stream_id, status, headers, metadata)
        for chunk in body:
            conn.send_data(stream_id, chunk)
        self._end(stream_id)

    def _end(self, stream_id: int) -> None:
        self._conn.end_stream(stream_id)
        if len(self._streams) <= 1:
            # The only stream in flight just ended its side: nothing else will join this
            # message, so it goes now rather than one loop iteration later (a request's OPEN and
            # END, an answer's HEADERS, DATA and END). With other streams in flight the flush
            # waits for the end of the iteration, so that their frames share the message.
            self._flush()  # releases the closed streams itself
        else:
            self._want_flush()
            self._release_closed_streams()

    def _reset(self, stream_id: int, code: ErrorCode, reason: str) -> None:
        self._conn.reset_stream(stream_id, code, reason)
        self._streams.pop(stream_id, None)
        self._want_flush()

    def _acknowledge(self, stream_id: int, size: int) -> None:
        self._conn.acknowledge_data(stream_id, size)
        # Most reads owe no WINDOW_UPDATE yet (updates are batched): no writer pass for them.
        if self._conn.has_output:
            self._want_flush()

    async def _wait_writable(self, stream: TunnelStream) -> None:
        while self._conn.outbound_buffered(stream.stream_id) > self._high_water:
            if stream.is_reset:
                break
            await self._next_progress()
        stream._raise_if_reset()

    async def _next_progress(self) -> None:
        self._progress_waiters += 1
        try:
            await asyncio.shield(self._progress)
        finally:
            self._progress_waiters -= 1

    def _notify_progress(self) -> None:
        # The writer calls this after every pass; almost always nobody waits (no stream over
        # its high-water mark, no control backlog), and then it costs no future.
        if self._progress_waiters:
            progress, self._progress = self._progress, self._loop.create_future()
            progress.set_result(None)

    def _release_closed_streams(self) -> None:
        """Forget the streams the core has finished with; their readers keep their buffers."""
        for stream_id in self._conn.take_closed_streams():
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                stream._finish()

    # ------------------------------------------------------------------ tasks

    async def _read_loop(self) -> None:
        conn = self._conn
        try:
            while not conn.closed:
                try:
                    message = await self._transport.receive()
                except (OSError, RuntimeError, ValueError) as exc:
                    logger.debug("tunnel %s: receive failed: %r", self.name, exc)
                    message = None
                if message is None:
                    self._dispatch(conn.connection_lost())
                    break
                if message is not DELIVERED:
                    self._on_message(message)
                while conn.control_backlog > self._control_backlog_limit and not conn.closed:
                    await self._next_progress()
        finally:
            self._wakeup.set()

    def _want_flush(self) -> None:
        """Output was queued: flush it once the current callback or task step is done, in one
        message with whatever else this loop iteration queues."""
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        """Write what the core has queued straight to the transport while it takes messages
        without waiting. Hands over to the writer task when it does not (the writer awaits the
        drain), while the writer is at work (it keeps the order), and when the session ends
        (the writer closes it)."""
        handle = self._flush_handle
        if handle is not None:
            # A direct flush (see _end) takes what the pending one would have: one callback
            # and one pass over an empty core fewer per request.
            handle.cancel()
            self._flush_handle = None
        conn = self._conn
        if self._writer_busy or self._finishing or conn.state is _CLOSED or not self._tasks:
            self._wakeup.set()
            self._release_closed_streams()
            return
        send_nowait = self._transport.send_nowait
        stats = self.stats
        try:
            while conn.has_output:
                message = conn.data_to_send()
                if not message:
                    break
                if not send_nowait(message):
                    self._held = message
                    self._wakeup.set()
                    break
                stats.messages_out += 1
                stats.bytes_out += len(message)
                if self._progress_waiters:
                    self._notify_progress()
        except (OSError, RuntimeError, ConnectionError) as exc:
            logger.debug("tunnel %s: send failed: %r", self.name, exc)
            self._dispatch(conn.connection_lost())
            self._wakeup.set()  # the writer task shuts the session down
            return
        self._release_closed_streams()
        if self._progress_waiters:
            self._notify_progress()

    def _on_message(self, message: bytes | str) -> bool:
        """Feed one message to the core and act on it; False once the reader must stop (the
        control backlog is over its bound, or the session ended). Runs in the reader task, or
        from the transport's receive callback (see :meth:`Transport.deliver_to`)."""
        conn = self._conn
        if message is TEXT or isinstance(message, str):
            self._dispatch(conn.receive_text())
        else:
            stats = self.stats
            stats.messages_in += 1
            stats.bytes_in += len(message)
            self._dispatch(conn.receive_message(message))
        # Flush only when there is something to write (a PONG, a window update, data that got
        # credit); an idle PONG or a DATA frame whose reader has not read yet needs no pass.
        # The writer task ends the session.
        if conn.state is _CLOSED:
            self._wakeup.set()
            return False
        if self._finishing:
            self._wakeup.set()
        elif conn.has_output:
            self._want_flush()
        return conn.control_backlog <= self._control_backlog_limit

    async def _write_loop(self) -> None:
        conn = self._conn
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                self._writer_busy = True
                message = self._held or conn.data_to_send()
                self._held = None
                while message:
                    await self._transport.send(message)
                    self.stats.messages_out += 1
                    self.stats.bytes_out += len(message)
                    self._notify_progress()
                    message = conn.data_to_send()
                self._writer_busy = False
                self._release_closed_streams()
                self._notify_progress()
                if conn.closed or (self._finishing and conn.is_drained):
                    break
        except (OSError, RuntimeError, ConnectionError) as exc:
            logger.debug("tunnel %s: send failed: %r", self.name, exc)
            self._dispatch(conn.connection_lost())
        finally:
            await self._shutdown()

    def _arm_timer(self) -> None:
        deadline = self._conn.next_deadline()
        if deadline is not None and not self._closed.is_set():
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(self._conn.handle_timer(self._loop.time()))
        # An interval in which the peer was heard sends nothing: no flush for it (on an idle
        # hub with thousands of tunnels this is most timer runs).
        if self._conn.closed:
            self._wakeup.set()
        elif self._conn.has_output:
            self._want_flush()
        self._arm_timer()

    async def _shutdown(self) -> None:
        if self._closed.is_set():
            return
        if not self._conn.closed:
            self._dispatch(self._conn.close(ErrorCode.NO_ERROR))  # ends it if drained
        if not self._conn.closed:
            self._dispatch(self._conn.close(ErrorCode.INTERNAL_ERROR, "session shut down"))
        self._closed.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._notify_progress()
        try:
            await self._transport.close(1000 if self.close_code in (None, 0) else 1011)
        except (OSError, RuntimeError, ConnectionError):  # pragma: no cover - best effort
            pass
        current = asyncio.current_task()
        for task in (*self._tasks, *self._handler_tasks):
            if task is not current:
                task.cancel()

    # ------------------------------------------------------------------ events

    def _dispatch(self, happened: list[events.Event]) -> None:
        streams = self._streams
        for event in happened:
            # The events of every proxied request first, by exact type (the core makes exactly
            # these classes): a ``match`` on class patterns costs an isinstance and the
            # ``__match_args__`` lookups for each case it tries.
            if type(event) is _DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._feed(event.data)
            elif type(event) is _StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._feed_eof()
            elif type(event) is _ResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._set_response(ResponseHead(event.status, event.headers, event.metadata))
            elif type(event) is _StreamOpened:
                self._accept(event.stream_id, event.target, event.metadata)
            else:
                self._dispatch_other(event)
        if self._conn.state is _CLOSED:
            for stream in streams.values():
                stream._fail(
                    StreamResetError(
                        self.close_code or ErrorCode.INTERNAL_ERROR,
                        self.close_reason or "session closed",
                        remote=False,
                    )
                )
            streams.clear()
            self._wakeup.set()
        self._release_closed_streams()

    def _dispatch_other(self, event: events.Event) -> None:
        """The events :meth:`_dispatch` does not handle itself (none per request)."""
        match event:
            case events.StreamReset(stream_id, code, reason, remote):
                stream = self._streams.pop(stream_id, None)
                if stream is not None:
                    stream._fail(StreamResetError(code, reason, remote=remote))
            case events.HelloReceived():
                self._hello.set()
            case events.ConnectionTerminated(code, reason, remote):
                if self.close_code is None:
                    self.close_code, self.close_reason = code, reason
                log = logger.info if code is ErrorCode.NO_ERROR else logger.warning
                log(
                    "tunnel %s ended by %s: %s %s",
                    self.name,
                    "peer" if remote else "us",
                    code.name,
                    reason,
                )
            case _:
                pass  # PongReceived, GoAwayReceived: the core acted on them already

    def _accept(self, stream_id: int, target: frames.Target, metadata: dict[str, Any]) -> None:
        stream = TunnelStream(self, stream_id, target=target, metadata=metadata)
        self._streams[stream_id] = stream
        self.stats.streams_accepted += 1
        if self._handler is None:
            stream.reset(ErrorCode.REFUSED_STREAM, "this side accepts no streams")
            return
        task = self._loop.create_task(
            self._run_handler(self._handler, stream), name=f"tunnel-stream {stream_id}"
        )
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    async def _run_handler(self, handler: StreamHandler, stream: TunnelStream) -> None:
        try:
            await handler(stream)
        except StreamResetError:
            pass
        except asyncio.CancelledError:
            stream.reset(ErrorCode.CANCEL, "handler cancelled")
            raise
        except Exception:  # a handler bug must cost one stream, not the session
            logger.exception("tunnel %s: stream %d handler failed", self.name, stream.stream_id)
            stream.reset(ErrorCode.INTERNAL_ERROR, "handler failed")
