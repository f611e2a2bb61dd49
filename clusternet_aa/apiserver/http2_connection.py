"""One HTTP/2 connection of the hub's listener: h2's state machine over the TLS transport.

:class:`Http2Connection` turns h2's events into request streams (one handler task each, served
by the aiohttp application as a real ``web.Request``), writes what h2 queues in batches, and
maps bad input to a stream reset or a GOAWAY. :class:`CountingH2Connection` is h2's connection
with its open-stream count made cheap. The listener and the stream are in ``http2`` and
``http2_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
import h2.utilities
from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.tcp_helpers import tcp_nodelay
from aiohttp.web_protocol import RequestHandler
from hyperframe.frame import GoAwayFrame
from multidict import CIMultiDict, istr

from clusternet_aa.apiserver.http2_headers import MalformedRequest, cached_request_message
from clusternet_aa.apiserver.http2_hpack import CachingDecoder, LiteralEncoder
from clusternet_aa.apiserver.http2_stream import Http2Stream, StreamPayload
from clusternet_aa.apiserver.status import StatusError

if TYPE_CHECKING:
    from clusternet_aa.apiserver.http2 import Http2Listener

logger = logging.getLogger(__name__)


class CountingH2Connection(h2.connection.H2Connection):
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


#: HEADERS frame type, its END_STREAM and END_HEADERS flags (RFC 9113 6.2), for
#: :meth:`Http2Connection._new_request`.
_HEADERS = 0x1
_END_STREAM = 0x1
_PLAIN_HEADERS = 0x5


class _Headers:
    """What h2's HEADERS handler reads of a frame (id, block, flags), without hyperframe."""

    __slots__ = ("data", "flags", "stream_id")

    _ENDED = frozenset({"END_HEADERS", "END_STREAM"})
    _OPEN = frozenset({"END_HEADERS"})

    def __init__(self, stream_id: int, data: bytes, end_stream: int) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flags = self._ENDED if end_stream else self._OPEN


_SERVER_OPEN = h2.connection.ConnectionState.SERVER_OPEN
_ODD_IDS = h2.connection.AllowedStreamIDs(True)  # what h2 passes for a server's peer
_IDLE = h2.stream.StreamState.IDLE
_OPEN = h2.stream.StreamState.OPEN
_HALF_CLOSED_REMOTE = h2.stream.StreamState.HALF_CLOSED_REMOTE


def _receive_request(
    conn: CountingH2Connection, stream_id: int, block: bytes, end_stream: int
) -> list[h2.events.Event]:
    """h2's ``_receive_headers_frame`` for a HEADERS frame opening a new request stream (a
    new odd id, no PRIORITY, the whole block) on a connection in SERVER_OPEN, with the
    stream transitions a request's headers take applied as h2 applies them.

    Why: h2 takes them through two ``process_input`` calls (each hashes two enums in
    Python), builds header validation flags and a processed copy of the list for checks
    that are off on this connection (``Http2Connection.__init__``: headers are checked by
    ``http2_headers``); with the connection's own no-op input that was about a tenth of the
    receiving side. Everything else is h2's own code in h2's order: the stream limit,
    HPACK decoding and its errors, the new stream, the informational check and the
    Content-Length it expects; anything out of the ordinary goes to h2's ``receive_headers``.
    """
    max_open_streams = conn.local_settings.max_concurrent_streams
    held = len(conn.streams)
    # CountingH2Connection.open_inbound_streams, without reading the setting a second time.
    value = held if held < conn._sweep_at and held < max_open_streams else conn.open_inbound_streams
    if value + 1 > max_open_streams:
        msg = f"Max inbound streams is {max_open_streams}, {value} open"
        raise h2.exceptions.TooManyStreamsError(msg)
    headers = h2.connection._decode_headers(conn.decoder, block)
    # (SERVER_OPEN, RECV_HEADERS) is (None, SERVER_OPEN) in h2's table: nothing to do.
    stream = conn._begin_new_stream(stream_id, _ODD_IDS)
    machine = stream.state_machine
    if (
        machine.state is not _IDLE
        or machine.headers_received
        or machine.trailers_received
        or h2.utilities.is_informational_response(headers)
    ):
        return stream.receive_headers(headers, bool(end_stream), None)[1]
    # (IDLE, RECV_HEADERS): request_received, to OPEN.
    machine.client = False
    machine.headers_received = True
    machine.state = _OPEN
    event = h2.events.RequestReceived(stream_id=stream_id)
    events: list[h2.events.Event] = [event]
    if end_stream:
        # (OPEN, RECV_END_STREAM): stream_half_closed, to HALF_CLOSED_REMOTE.
        machine.state = _HALF_CLOSED_REMOTE
        ended = h2.events.StreamEnded(stream_id=stream_id)
        event.stream_ended = ended
        events.append(ended)
    stream._initialize_content_length(headers)
    # As _process_received_headers with normalisation, validation and decoding off.
    event.headers = list(headers)
    return events


class Http2Connection(asyncio.Protocol):
    """One HTTP/2 connection: h2's state machine over the TLS transport, one task per stream."""

    def __init__(self, listener: Http2Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        settings = listener.settings
        self.h2 = CountingH2Connection(
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
        self.h2.decoder = CachingDecoder(self.h2.decoder.max_header_list_size)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_size,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
            },
        )
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.streams: dict[int, Http2Stream] = {}
        #: Streams whose writer waits for flow-control credit.
        self.blocked: set[Http2Stream] = set()
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
        #: Loop time the last stream ended (None while a stream is open).
        self._idle_since: float | None = None
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
        try:
            # A lone new request's frame, at a frame boundary and within our frame size (what
            # the scanner would check and leave as it was), else the scanner, then h2.
            events = self._new_request(data)
            if events is None:
                if not self._frames_fit(data):
                    logger.info(
                        "HTTP/2 connection from %s: frame larger than allowed", self.peername
                    )
                    self.close(h2.errors.ErrorCodes.FRAME_SIZE_ERROR)
                    return
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
        if self.h2._data_to_send:  # acks, window updates, resets h2 queued for this read
            self.flush_soon()

    def _new_request(self, data: bytes) -> list[h2.events.Event] | None:
        """h2's events for ``data`` when it is exactly one HEADERS frame opening a new stream
        with its whole header block (what a client sends per GET), else None (nothing done:
        h2's ``receive_data`` takes it).

        Why: h2's ``receive_data`` buffers the bytes, parses the frame into ``hyperframe``
        objects (flag sets, padding and priority parts), formats its ``repr`` for a trace log
        that is off, and dispatches on the class; that was a fifth of the hub's HTTP/2 CPU
        per request. Here the 9-byte header is read directly and the frame goes to the same
        h2 method that handles a HEADERS frame after that dispatch (stream limits, HPACK,
        connection and stream state machines, events), with the same connection error
        (GOAWAY) on a protocol error. Only when h2's frame buffer holds nothing (no partial
        frame, no header block awaiting CONTINUATION, the preface read), without PADDED or
        PRIORITY, on an odd stream id above every one seen: the cases where h2's dispatch
        adds nothing to what that method does.
        """
        size = len(data)
        if size < 9 or data[3] != _HEADERS or (data[4] | _END_STREAM) != _PLAIN_HEADERS:
            return None
        if int.from_bytes(data[:3], "big") != size - 9 or self._skip or self._partial:
            return None
        conn = self.h2
        if size - 9 > conn.max_inbound_frame_size:
            return None
        stream_id = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        buffer = conn.incoming_buffer
        if (
            not stream_id & 1
            or stream_id <= conn.highest_inbound_stream_id
            or stream_id in conn.streams
            or buffer._data
            or buffer._headers_buffer
            or buffer._preamble_len
        ):
            return None
        try:
            if conn.state_machine.state is _SERVER_OPEN:
                events = _receive_request(conn, stream_id, bytes(data[9:]), data[4] & _END_STREAM)
                frames: list[Any] = []
            else:
                frame = _Headers(stream_id, bytes(data[9:]), data[4] & _END_STREAM)
                frames, events = conn._receive_headers_frame(frame)  # type: ignore[arg-type]
        except h2.exceptions.ProtocolError as exc:
            conn._terminate_connection(exc.error_code)
            raise
        conn._prepare_for_sending(frames)
        return events

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
        """The connection has no stream from now: it closes after ``idle_timeout`` unless a
        request comes. The timer is not cancelled by that request (a sequential client would
        otherwise start and cancel one per request); it checks when it fires."""
        self._idle_since = self._loop.time()
        if self._idle_timer is None and not self._closed:
            timeout = self.listener.settings.idle_timeout
            self._idle_timer = self._loop.call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self.streams or self._idle_since is None or self._closed:
            return  # busy: armed again when its last stream ends
        left = self._idle_since + self.listener.settings.idle_timeout - self._loop.time()
        if left > 0:
            self._idle_timer = self._loop.call_later(left, self._on_idle)
        else:
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

    @property
    def writing_paused(self) -> bool:
        """The TLS transport's write buffer is above its high-water mark."""
        return self._write_paused

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

    def write_ended(self, data: bytes) -> None:
        """A response's last frames, built as bytes (``Http2Stream._finish``), written as
        :meth:`flush_ended` writes: behind whatever h2 has queued. Alone on the connection
        with nothing queued they go straight to the transport, not through h2's buffer (an
        append and a copy of the whole response)."""
        if len(self.streams) <= 1 and not self.h2._data_to_send:
            self.unflushed = 0
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.write(data)
            return
        self.h2._data_to_send += data
        self.flush_ended()

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
        stream = Http2Stream(self, stream_id)
        self.listener.h2_streams_total += 1
        try:
            message, problem = cached_request_message(
                event.headers, ended=event.stream_ended is not None
            )
        except MalformedRequest as exc:
            # RFC 9113 8.1.1: a stream error; the connection and its other streams go on.
            logger.info("HTTP/2 request from %s: malformed: %s", self.peername, exc)
            self.reset_stream(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        # A stream is open from here: the idle timer, when it fires, leaves the connection be
        # (a malformed request above, reset at once, does not count as activity).
        self._idle_since = None
        if problem is not None:
            self.streams[stream_id] = stream
            self._start(stream, self._refuse(stream, problem))
            return
        assert message is not None
        if event.stream_ended is None:
            stream.payload = StreamPayload(stream, settings.stream_window, self._loop)
        self.streams[stream_id] = stream
        self._start(stream, self._serve(stream, message))

    def _start(self, stream: Http2Stream, handler: Coroutine[Any, Any, None]) -> None:
        """One task per stream, and no done callback: the handler's ``finally`` ends the
        stream, and a handler cancelled before its first step (which never runs that
        ``finally``) is ended by :meth:`Http2Stream.cancel_handler`. A done callback per
        stream cost a callback and, for a sequential client, one more loop iteration (an
        ``epoll_wait``) per request."""
        stream.task = self._loop.create_task(handler)

    async def _serve(self, stream: Http2Stream, message: RawRequestMessage) -> None:
        """What aiohttp's RequestHandler does for one request, for one stream."""
        stream.started = True
        server = self.listener.server
        task = stream.task  # set by _on_request before this coroutine's first step
        assert task is not None
        request: web.BaseRequest | None = None
        try:
            request = server.request_factory(
                message, stream.payload, cast(RequestHandler, stream), stream, task
            )
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
            if request is not None:
                request._task = None  # type: ignore[assignment]  # break the cycle, as aiohttp
            self.stream_done(stream)

    async def _refuse(self, stream: Http2Stream, error: StatusError) -> None:
        """Answer a request the application must not see (an upgrade) with a Status."""
        stream.started = True
        try:
            await stream.write_headers(
                f"HTTP/2 {error.code} {_reason(error.code)}",
                CIMultiDict({istr("Content-Type"): "application/json"}),
            )
            await stream.write_eof(json.dumps(error.to_status()).encode())
        except (asyncio.CancelledError, ConnectionError):
            stream.reset(h2.errors.ErrorCodes.CANCEL)
        finally:
            self.stream_done(stream)

    def stream_done(self, stream: Http2Stream) -> None:
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
