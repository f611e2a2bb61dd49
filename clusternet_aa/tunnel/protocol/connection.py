"""The sans-IO tunnel session: bytes in, events and bytes out.

:class:`Connection` does no IO and keeps no clock of its own. Its driver feeds it each websocket
message with :meth:`Connection.receive_message`, writes whatever :meth:`Connection.data_to_send`
returns, and calls :meth:`Connection.handle_timer` when :meth:`Connection.next_deadline` passes.
Everything the protocol decides (flow control, fairness between streams, keepalive, drain, what
to do with a peer's bad input) is decided here, where it can be tested without sockets.

Outbound scheduling: control frames (OPEN, HEADERS, END, RESET, WINDOW_UPDATE, PING, PONG,
GOAWAY) go out before any queued DATA; DATA is taken round-robin, one frame per stream per turn,
so one bulk stream cannot starve the others.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from typing import Any, NoReturn

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.errors import (
    ConnectionClosedError,
    ErrorCode,
    FrameTooLargeError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamClosedError,
)
from clusternet_aa.tunnel.protocol.frames import FrameType
from clusternet_aa.tunnel.protocol.settings import FRAME_OVERHEAD, Settings
from clusternet_aa.tunnel.protocol.state import StreamInput, StreamState, moves, next_state
from clusternet_aa.tunnel.protocol.windows import ReceiveWindow, SendCredit


class Role(enum.Enum):
    """Which end of the websocket we are. The client (the agent, which dials) uses odd stream
    ids and the server (the hub) even ones, so both can open streams without colliding."""

    CLIENT = 1
    SERVER = 2


class ConnectionState(enum.Enum):
    OPEN = "open"
    #: A GOAWAY went one way or the other: streams in flight finish, no new ones start.
    DRAINING = "draining"
    CLOSED = "closed"


#: Characters of a RESET or GOAWAY reason that go on the wire: 200 of even 4-byte UTF-8 fit
#: in the smallest frame a peer may announce, so a long reason never breaks the session.
_MAX_REASON = 200

#: Do not start a DATA frame in less room than this: a tiny frame costs more than it carries.
_MIN_DATA_ROOM = 1024

_RECEIVING_STATES = frozenset(
    {
        StreamState.OPEN_AWAITING_HEAD,
        StreamState.OPEN,
        StreamState.HALF_CLOSED_LOCAL_AWAITING_HEAD,
        StreamState.HALF_CLOSED_LOCAL,
    }
)


#: Frame types as plain ints, to compare with a decoded frame's first element.
_OPEN = int(FrameType.OPEN)
_HEADERS = int(FrameType.HEADERS)
_DATA = int(FrameType.DATA)
_END = int(FrameType.END)

#: The moves of the hot inputs, ``(responder's, opener's)``: the per-frame transitions index
#: these by ``stream.opener`` instead of calling :func:`next_state` with a key tuple. A miss
#: goes to :func:`_refuse`, which raises what :func:`next_state` raises.
_SEND_OPEN = moves(StreamInput.SEND_OPEN)
_SEND_HEADERS = moves(StreamInput.SEND_HEADERS)
_SEND_DATA = moves(StreamInput.SEND_DATA)
_SEND_END = moves(StreamInput.SEND_END)
_RECV_OPEN = moves(StreamInput.RECV_OPEN)
_RECV_HEADERS = moves(StreamInput.RECV_HEADERS)
_RECV_DATA = moves(StreamInput.RECV_DATA)
_RECV_END = moves(StreamInput.RECV_END)
#: The state a stream starts in: after we send its OPEN, or after we receive the peer's.
_OPENER_OPEN = _SEND_OPEN[True][StreamState.IDLE]
_RESPONDER_OPEN = _RECV_OPEN[False][StreamState.IDLE]

#: Every control frame this short fits in any frame limit (``max_frame_size`` is at least
#: 1 KiB on both sides), so the size check is skipped for it.
_ALWAYS_FITS = 1024 + FRAME_OVERHEAD

#: Module-level aliases: one global load instead of a global and an enum attribute load.
_OPEN_STATE = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED
_STREAM_CLOSED = StreamState.CLOSED


class _Stream:
    """Per-stream bookkeeping; the outbound buffer is a queue of byte chunks."""

    __slots__ = (
        "end_pending",
        "id",
        "opener",
        "outbound",
        "outbound_size",
        "receive_window",
        "send_credit",
        "state",
    )

    def __init__(
        self, stream_id: int, opener: bool, state: StreamState, send: int, receive: int
    ) -> None:
        self.id = stream_id
        self.opener = opener
        self.state = state
        self.send_credit = SendCredit(send)
        self.receive_window = ReceiveWindow(receive)
        # Made on the first write: most streams in a hub (watches, GETs) never send a body.
        self.outbound: deque[bytes | memoryview] | None = None
        self.outbound_size = 0
        self.end_pending = False

    def advance(self, event: StreamInput) -> None:
        self.state = next_state(self.state, event, opener=self.opener, stream_id=self.id)


def _refuse(stream: _Stream, event: StreamInput) -> NoReturn:
    """Raise what :func:`next_state` raises for a move the table does not have."""
    next_state(stream.state, event, opener=stream.opener, stream_id=stream.id)
    raise AssertionError(f"{event} in {stream.state} is legal")  # pragma: no cover


class Connection:
    """One side of a tunnel session."""

    def __init__(self, role: Role, settings: Settings | None = None, *, now: float = 0.0) -> None:
        self.role = role
        self.local_settings = settings or Settings()
        self.peer_settings: Settings | None = None
        self.state = ConnectionState.OPEN
        self._streams: dict[int, _Stream] = {}
        # Live streams by opener ([peer's, ours]): the concurrency limits are checked on every
        # OPEN, and counting a tunnel with a thousand watches on each would cost O(streams).
        self._stream_counts = [0, 0]
        self._next_stream_id = 1 if role is Role.CLIENT else 2
        self._highest_peer_stream_id = 0
        self._peer_parity = 0 if role is Role.CLIENT else 1
        self._session_credit = SendCredit(0)
        self._session_window = ReceiveWindow(self.local_settings.session_window)
        self._control: deque[bytes] = deque()
        self._control_size = 0
        self._ready: deque[int] = deque()
        self._in_ready: set[int] = set()
        self._goaway_sent = False
        # Keepalive: a miss is a whole interval in which nothing at all was heard from the peer.
        # A PING goes out only after such a quiet interval, so a live link carries one PING/PONG
        # exchange every interval or two whichever side sends it, and none while traffic flows.
        self._next_ping_at = now + self.local_settings.keepalive_interval
        self._heard = False
        self._missed = 0
        self._ping_counter = 0
        self._closed_ids: list[int] = []
        self._queue(frames.Hello(self.local_settings.to_wire()))

    # ------------------------------------------------------------------ introspection

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def control_backlog(self) -> int:
        """Bytes of control frames waiting to be sent; the driver stops reading while this is
        large, so a peer that sends but never reads cannot grow our memory."""
        return self._control_size

    @property
    def has_output(self) -> bool:
        """True when :meth:`data_to_send` may have something: control frames are queued or a
        stream has data and credit. A driver need not wake its writer otherwise."""
        return bool(self._control or self._ready)

    @property
    def is_drained(self) -> bool:
        """True once a GOAWAY went either way and every stream has finished."""
        return self.state is not ConnectionState.OPEN and not self._streams

    def take_closed_streams(self) -> list[int]:
        """Ids of the streams forgotten since the last call (finished or reset), so a driver
        can release what it keeps per stream without scanning."""
        closed, self._closed_ids = self._closed_ids, []
        return closed

    def stream_state(self, stream_id: int) -> StreamState:
        stream = self._streams.get(stream_id)
        return stream.state if stream else StreamState.CLOSED

    def outbound_buffered(self, stream_id: int) -> int:
        """Bytes the application wrote on this stream that are not yet framed."""
        stream = self._streams.get(stream_id)
        return stream.outbound_size if stream else 0

    def send_credit(self, stream_id: int) -> int:
        """Credit for one stream, or for the session with id 0."""
        if stream_id == 0:
            return self._session_credit.available
        stream = self._streams.get(stream_id)
        return stream.send_credit.available if stream else 0

    # ------------------------------------------------------------------ local actions

    def open_stream(self, target: frames.Target, metadata: Mapping[str, Any] | None = None) -> int:
        """Start a stream towards the peer and return its id."""
        if self.state is not _OPEN_STATE:
            raise ConnectionClosedError(f"session is {self.state.value}: no new streams")
        peer = self.peer_settings
        if peer is not None and self._stream_counts[1] >= peer.max_concurrent_streams:
            raise LocalProtocolError(
                f"the peer accepts at most {peer.max_concurrent_streams} concurrent streams",
                ErrorCode.REFUSED_STREAM,
            )
        stream_id = self._next_stream_id
        encoded = codec.encode_open(stream_id, target, metadata)
        if len(encoded) > _ALWAYS_FITS:
            self._check_control_size(encoded)
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(
            stream_id,
            True,
            _OPENER_OPEN,
            peer.initial_stream_window if peer is not None else 0,
            self.local_settings.initial_stream_window,
        )
        self._stream_counts[1] += 1
        self._control.append(encoded)
        self._control_size += len(encoded)
        return stream_id

    def send_headers(
        self,
        stream_id: int,
        status: int,
        headers: frames.Headers = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Send the response head of a stream the peer opened."""
        stream = self._streams.get(stream_id)
        if stream is None or self.state is _CLOSED:
            self._refuse_action(stream_id)
        encoded = codec.encode_headers(stream_id, status, headers, metadata)
        if len(encoded) > _ALWAYS_FITS:
            self._check_control_size(encoded)
        state = _SEND_HEADERS[stream.opener].get(stream.state)
        if state is None:
            _refuse(stream, StreamInput.SEND_HEADERS)
        stream.state = state
        self._control.append(encoded)
        self._control_size += len(encoded)

    def send_data(self, stream_id: int, data: bytes) -> None:
        """Queue bytes on a stream. They leave as credit allows; the driver applies
        backpressure to the writer by watching :meth:`outbound_buffered`."""
        stream = self._streams.get(stream_id)
        if stream is None or self.state is _CLOSED:
            self._refuse_action(stream_id)
        state = _SEND_DATA[stream.opener].get(stream.state)
        if state is None:
            _refuse(stream, StreamInput.SEND_DATA)
        stream.state = state
        if not data:
            return
        if stream.outbound is None:
            stream.outbound = deque()
        stream.outbound.append(bytes(data))
        stream.outbound_size += len(data)
        if stream_id not in self._in_ready and stream.send_credit.available > 0:  # _mark_ready
            self._in_ready.add(stream_id)
            self._ready.append(stream_id)

    def end_stream(self, stream_id: int) -> None:
        """Half-close: END follows the stream's queued data."""
        stream = self._streams.get(stream_id)
        if stream is None or self.state is _CLOSED:
            self._refuse_action(stream_id)
        state = _SEND_END[stream.opener].get(stream.state)
        if state is None:
            _refuse(stream, StreamInput.SEND_END)
        stream.state = state
        if stream.outbound_size:
            stream.end_pending = True
        else:
            encoded = codec.encode_end(stream_id)
            self._control.append(encoded)
            self._control_size += len(encoded)
            if state is _STREAM_CLOSED:  # _forget, inlined
                del self._streams[stream_id]
                self._stream_counts[stream.opener] -= 1
                self._closed_ids.append(stream_id)

    def reset_stream(
        self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL, reason: str = ""
    ) -> None:
        """Abort a stream; resetting a stream that is already gone does nothing."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state is StreamState.CLOSED:
            return
        stream.advance(StreamInput.SEND_RESET)
        self._queue(frames.Reset(stream_id, int(code), reason[:_MAX_REASON]))
        self._drop(stream)

    def acknowledge_data(self, stream_id: int, size: int) -> None:
        """The consumer has read ``size`` bytes of the stream: return that much credit."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.state not in _RECEIVING_STATES:
            return
        increment = stream.receive_window.consumed(size)
        if increment:
            self._queue_encoded(codec.encode_window_update(stream_id, increment))

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR, reason: str = "") -> list[events.Event]:
        """Send GOAWAY. NO_ERROR drains (streams in flight finish); any other code ends the
        session at once, and the returned events say so."""
        if self.state is ConnectionState.CLOSED:
            return []
        if code is ErrorCode.NO_ERROR:
            if not self._goaway_sent:
                self._goaway_sent = True
                self.state = ConnectionState.DRAINING
                goaway = frames.GoAway(
                    self._highest_peer_stream_id, int(code), reason[:_MAX_REASON]
                )
                self._queue(goaway)
            if self._streams:
                return []
            return self._terminate(code, reason or "drained", remote=False, goaway=False)
        return self._terminate(code, reason, remote=False)

    # ------------------------------------------------------------------ output

    def data_to_send(self, max_bytes: int | None = None) -> bytearray:
        """The next websocket message to send, empty when there is nothing (or no credit).

        A new bytearray that the caller owns: a websocket client must mask what it sends, and
        can do so in place instead of copying the message once more."""
        control = self._control
        if not control and not self._ready:
            return bytearray()
        peer = self.peer_settings
        limit = (peer or self.local_settings).max_message_size
        if max_bytes is not None and max_bytes < limit:
            limit = max_bytes
        chunks: list[bytes | memoryview]
        if self._control_size <= limit:
            # The usual case: every queued control frame fits, the loop below would take all.
            chunks = list(control)
            size = self._control_size
            control.clear()
            self._control_size = 0
        else:
            chunks = []
            size = 0
            while control and (not size or size + len(control[0]) <= limit):
                frame = control.popleft()
                self._control_size -= len(frame)
                chunks.append(frame)
                size += len(frame)
        # DATA only once every control frame is out: a backlog longer than one message must not
        # let DATA overtake, say, the OPEN of its own stream.
        if not control and self._ready and peer is not None and self.state is not _CLOSED:
            self._take_data(chunks, size, limit, peer.max_frame_size)
        return bytearray().join(chunks)

    def _take_data(
        self, chunks: list[bytes | memoryview], size: int, limit: int, max_frame: int
    ) -> int:
        ready = self._ready
        session = self._session_credit
        while ready and session.available > 0:
            room = limit - size - FRAME_OVERHEAD
            if room <= 0 or (room < _MIN_DATA_ROOM and size):
                break
            stream = self._streams[ready.popleft()]
            self._in_ready.discard(stream.id)
            credit = stream.send_credit
            n = min(stream.outbound_size, credit.available, session.available, max_frame, room)
            out = stream.outbound
            assert out is not None  # only streams with queued bytes are ready
            if len(out[0]) == n:  # the usual case: a whole chunk (see _pop_outbound)
                payload = out.popleft()
                stream.outbound_size -= n
            else:
                payload = self._pop_outbound(stream, n)
            # What SendCredit.consume does, without its check: n is at most either credit.
            credit.available -= n
            session.available -= n
            header = codec.data_header(stream.id, n)
            chunks.append(header)
            chunks.append(payload)  # joined into the message: the payload's only copy
            size += len(header) + n
            if stream.outbound_size:
                if credit.available:
                    self._mark_ready(stream)
            elif stream.end_pending:
                stream.end_pending = False
                end = codec.encode_end(stream.id)
                chunks.append(end)
                size += len(end)
                self._forget_if_done(stream)
        return size

    @staticmethod
    def _pop_outbound(stream: _Stream, n: int) -> bytes | memoryview:
        """The next ``n`` queued bytes when they are not exactly the first chunk (that case is
        :meth:`_take_data`'s own). Partial chunks are cut as memoryviews, so no payload is
        copied before :meth:`data_to_send` joins the message."""
        out = stream.outbound
        assert out is not None  # only streams with queued bytes are ready
        first = out[0]
        stream.outbound_size -= n
        if len(first) > n:
            view = first if type(first) is memoryview else memoryview(first)
            out[0] = view[n:]
            return view[:n]
        out.popleft()
        parts = [first]
        got = len(first)
        while got < n:
            chunk = out.popleft()
            if got + len(chunk) > n:
                view = chunk if type(chunk) is memoryview else memoryview(chunk)
                out.appendleft(view[n - got :])
                chunk = view[: n - got]
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None once closed."""
        return None if self.state is ConnectionState.CLOSED else self._next_ping_at

    def handle_timer(self, now: float) -> list[events.Event]:
        """Run keepalive: PING after a quiet interval; the link is dead after too many misses.

        Why only after a quiet interval: an idle hub holds thousands of tunnels and every PING or
        PONG costs it a TLS record, a syscall and a wakeup. If anything arrived during the
        interval (traffic, the peer's own PING, a PONG) the peer is alive and a PING would prove
        nothing new. Both sides run the same rule, so on an idle link whichever timer fires
        first pings and the other side, having just heard that PING, stays silent.
        """
        if self.state is ConnectionState.CLOSED or now < self._next_ping_at:
            return []
        self._next_ping_at = now + self.local_settings.keepalive_interval
        if self._heard:
            self._heard = False
            self._missed = 0
            return []
        self._missed += 1
        if self._missed >= self.local_settings.keepalive_misses:
            return self._terminate(
                ErrorCode.KEEPALIVE_TIMEOUT,
                f"nothing heard for {self._missed} keepalive intervals",
                remote=False,
            )
        self._ping_counter += 1
        self._queue(frames.Ping(self._ping_counter))
        return []

    # ------------------------------------------------------------------ input

    def receive_message(self, message: bytes) -> list[events.Event]:
        """Process one binary websocket message from the peer."""
        if self.state is _CLOSED:
            return []
        self._heard = True
        output: list[events.Event] = []
        try:
            local = self.local_settings
            if len(message) > local.max_message_size:
                raise FrameTooLargeError(
                    f"message of {len(message)} bytes exceeds {local.max_message_size}"
                )
            decoded = codec.decode_wire(message, local.max_frame_size)
            streams = self._streams
            for item in decoded:
                kind = item[0]
                try:
                    # Dispatch on the frame type, an int: the frames of a proxied request first,
                    # END and HEADERS handled right here (a call each saved).
                    if self.peer_settings is None:
                        self._handle_first(item, output)
                    elif kind == _DATA:
                        self._handle_data(item[1], item[2], output)
                    elif kind == _OPEN:
                        self._handle_open(item[1], item[2], item[3], output)
                    elif kind == _END:
                        stream_id = item[1]
                        stream = streams.get(stream_id)
                        if stream is None:
                            self._peer_target(stream_id, quiet=True)
                        else:
                            state = _RECV_END[stream.opener].get(stream.state)
                            if state is None:
                                _refuse(stream, StreamInput.RECV_END)
                            stream.state = state
                            output.append(events.StreamEnded(stream_id))
                            if state is _STREAM_CLOSED and not stream.outbound_size:
                                del streams[stream_id]  # _forget, inlined
                                self._stream_counts[stream.opener] -= 1
                                self._closed_ids.append(stream_id)
                    elif kind == _HEADERS:
                        _, stream_id, status, headers, metadata = item
                        stream = streams.get(stream_id)
                        if stream is None:
                            self._peer_target(stream_id)
                        else:
                            state = _RECV_HEADERS[stream.opener].get(stream.state)
                            if state is None:
                                _refuse(stream, StreamInput.RECV_HEADERS)
                            stream.state = state
                            output.append(
                                events.ResponseReceived(stream_id, status, headers, metadata)
                            )
                    else:
                        self._handle_control(item, output)
                except RemoteProtocolError as exc:
                    if not exc.stream_id:
                        raise
                    self._reset_for_fault(exc, output)
                if self.state is _CLOSED:
                    break
        except RemoteProtocolError as exc:
            output.extend(self._terminate(exc.code, str(exc), remote=False))
        return output

    def connection_lost(self) -> list[events.Event]:
        """The transport closed under us. After a completed drain that is the normal end;
        otherwise every stream fails."""
        if self.state is ConnectionState.CLOSED:
            return []
        if self.is_drained:
            return self._terminate(ErrorCode.NO_ERROR, "drained", remote=True)
        return self._terminate(ErrorCode.INTERNAL_ERROR, "connection lost", remote=True)

    def receive_text(self) -> list[events.Event]:
        """The peer sent a text message, which the protocol forbids: end the session."""
        if self.state is ConnectionState.CLOSED:
            return []
        return self._terminate(ErrorCode.PROTOCOL_ERROR, "text message on the tunnel", remote=False)

    def _handle_first(self, item: codec.WireFrame, output: list[events.Event]) -> None:
        if item[0] != FrameType.HELLO:
            raise RemoteProtocolError("the first frame must be HELLO")
        self._handle_hello(item[2], output)

    def _handle_control(self, item: codec.WireFrame, output: list[events.Event]) -> None:
        """The frames :meth:`receive_message` does not handle itself (a
        :data:`codec.WireFrame`: type, then the frame's fields)."""
        kind = item[0]
        if kind == FrameType.WINDOW_UPDATE:
            self._handle_window_update(item[1], item[2])
        elif kind == FrameType.RESET:
            _, stream_id, code, reason = item
            stream = self._peer_target(stream_id, quiet=True)
            if stream is not None:
                if stream.state is not StreamState.CLOSED:
                    stream.advance(StreamInput.RECV_RESET)
                # else: both ENDs are done but ours is still queued behind data; from the
                # peer's side the stream is half-open, so its RESET is legal.
                self._drop(stream)
                output.append(
                    events.StreamReset(stream_id, ErrorCode.from_wire(code), reason, True)
                )
        elif kind == FrameType.PING:
            self._queue(frames.Pong(item[2]))
        elif kind == FrameType.PONG:
            output.append(events.PongReceived(item[2]))
        elif kind == FrameType.GOAWAY:
            self._handle_goaway(item[2], item[3], item[4], output)
        else:  # HELLO: the decoder lets through no other type
            raise RemoteProtocolError("HELLO sent twice")

    def _handle_hello(self, fields: dict[str, Any], output: list[events.Event]) -> None:
        peer = Settings.from_wire(fields)
        self.peer_settings = peer
        self._session_credit.grant(peer.session_window)
        for stream in self._streams.values():
            stream.send_credit.grant(peer.initial_stream_window, stream_id=stream.id)
            if stream.outbound_size:
                # Written before the peer's HELLO, when there was no credit to send it.
                self._mark_ready(stream)
        output.append(events.HelloReceived(peer))

    def _handle_open(
        self,
        stream_id: int,
        target: frames.Target,
        metadata: dict[str, Any],
        output: list[events.Event],
    ) -> None:
        if stream_id % 2 != self._peer_parity:
            raise RemoteProtocolError(f"peer opened stream {stream_id} with our parity")
        if stream_id <= self._highest_peer_stream_id:
            raise RemoteProtocolError(f"peer reused stream id {stream_id}")
        self._highest_peer_stream_id = stream_id
        if self.state is not _OPEN_STATE:
            self._queue(frames.Reset(stream_id, ErrorCode.REFUSED_STREAM, "session is draining"))
            return
        if self._stream_counts[0] >= self.local_settings.max_concurrent_streams:
            self._queue(frames.Reset(stream_id, ErrorCode.REFUSED_STREAM, "too many streams"))
            return
        peer = self.peer_settings
        self._streams[stream_id] = _Stream(
            stream_id,
            False,
            _RESPONDER_OPEN,
            peer.initial_stream_window if peer is not None else 0,
            self.local_settings.initial_stream_window,
        )
        self._stream_counts[0] += 1
        output.append(events.StreamOpened(stream_id, target, metadata))

    def _handle_data(self, stream_id: int, data: bytes, output: list[events.Event]) -> None:
        size = len(data)
        # Session credit measures bytes in flight on the link: it returns as soon as the bytes
        # arrive. What a consumer has not read yet is bounded by its stream window instead, so
        # one stalled reader holds at most one stream window and never blocks the others.
        session = self._session_window
        if size > session.remaining:
            session.receive(size)  # raises: more than the window
        session.remaining -= size
        increment = session.consumed(size)
        if increment:
            self._queue_encoded(codec.encode_window_update(0, increment))
        stream = self._streams.get(stream_id)
        if stream is None:
            self._peer_target(stream_id)
            return
        state = _RECV_DATA[stream.opener].get(stream.state)
        if state is None:
            _refuse(stream, StreamInput.RECV_DATA)
        stream.state = state
        window = stream.receive_window
        if size > window.remaining:
            window.receive(size, stream_id=stream_id)  # raises: more than the window
        window.remaining -= size  # ReceiveWindow.receive, inlined
        output.append(events.DataReceived(stream_id, data))

    def _handle_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._session_credit.grant(increment)
            return
        stream = self._peer_target(stream_id, quiet=True)
        if stream is None:
            return
        stream.send_credit.grant(increment, stream_id=stream.id)
        if stream.outbound_size:
            self._mark_ready(stream)

    def _handle_goaway(
        self, last_stream_id: int, wire_code: int, reason: str, output: list[events.Event]
    ) -> None:
        code = ErrorCode.from_wire(wire_code)
        if self.state is ConnectionState.OPEN:
            self.state = ConnectionState.DRAINING
        for stream in list(self._streams.values()):
            if stream.opener and stream.id > last_stream_id:
                self._drop(stream)
                output.append(
                    events.StreamReset(
                        stream.id, ErrorCode.REFUSED_STREAM, "refused by GOAWAY", True
                    )
                )
        output.append(events.GoAwayReceived(last_stream_id, code, reason))
        if code is not ErrorCode.NO_ERROR:
            output.extend(self._terminate(code, reason, remote=True))

    # ------------------------------------------------------------------ helpers

    def _peer_target(self, stream_id: int, *, quiet: bool = False) -> _Stream | None:
        """The live stream a peer frame is about. For a stream that is already closed, the
        frame is a late arrival: END, RESET and WINDOW_UPDATE are dropped (``quiet``), other
        frames get RESET(STREAM_CLOSED). A frame for a stream never opened is a stream error."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id % 2 == self._peer_parity:
            opened = stream_id <= self._highest_peer_stream_id
        else:
            opened = stream_id < self._next_stream_id
        if not opened:
            raise RemoteProtocolError(f"frame for idle stream {stream_id}", stream_id=stream_id)
        if not quiet:
            self._queue(frames.Reset(stream_id, ErrorCode.STREAM_CLOSED, "stream is closed"))
        return None

    def _reset_for_fault(self, exc: RemoteProtocolError, output: list[events.Event]) -> None:
        stream = self._streams.get(exc.stream_id)
        self._queue(frames.Reset(exc.stream_id, int(exc.code), str(exc)[:_MAX_REASON]))
        if stream is not None:
            self._drop(stream)
            output.append(events.StreamReset(exc.stream_id, exc.code, str(exc), False))

    def _terminate(
        self, code: ErrorCode, reason: str, *, remote: bool, goaway: bool = True
    ) -> list[events.Event]:
        output: list[events.Event] = [
            events.StreamReset(stream_id, code, reason or code.name, remote)
            for stream_id in self._streams
        ]
        self._closed_ids.extend(self._streams)
        self._streams.clear()
        self._stream_counts = [0, 0]
        self._ready.clear()
        self._in_ready.clear()
        if goaway and not remote:
            self._queue(
                frames.GoAway(self._highest_peer_stream_id, int(code), reason[:_MAX_REASON])
            )
        self.state = ConnectionState.CLOSED
        output.append(events.ConnectionTerminated(code, reason, remote))
        return output

    def _refuse_action(self, stream_id: int) -> NoReturn:
        """Raise for a local action on a stream that is gone or a session that is closed."""
        if self.state is _CLOSED:
            raise ConnectionClosedError("session is closed")
        raise StreamClosedError(f"stream {stream_id} is closed or unknown")

    def _count_streams(self, *, local: bool) -> int:
        return self._stream_counts[local]

    def _mark_ready(self, stream: _Stream) -> None:
        if stream.id not in self._in_ready and stream.send_credit.available > 0:
            self._in_ready.add(stream.id)
            self._ready.append(stream.id)

    def _drop(self, stream: _Stream) -> None:
        stream.outbound = None
        stream.outbound_size = 0
        stream.end_pending = False
        # pragma below: every caller passes a stream it just took from self._streams.
        if self._streams.pop(stream.id, None) is not None:  # pragma: no branch
            self._stream_counts[stream.opener] -= 1
            self._closed_ids.append(stream.id)
        if stream.id in self._in_ready:
            self._in_ready.discard(stream.id)
            self._ready.remove(stream.id)

    def _forget_if_done(self, stream: _Stream) -> None:
        if stream.state is _STREAM_CLOSED and not stream.outbound_size:
            self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        """Forget a stream that finished cleanly (closed, nothing left to send)."""
        del self._streams[stream.id]
        self._stream_counts[stream.opener] -= 1
        self._closed_ids.append(stream.id)

    def _check_control_size(self, encoded: bytes) -> None:
        limit = min(
            self.local_settings.max_frame_size,
            self.peer_settings.max_frame_size if self.peer_settings else 2**31,
        )
        if len(encoded) > limit + FRAME_OVERHEAD:
            raise LocalProtocolError(
                f"frame of {len(encoded)} bytes exceeds the limit of {limit + FRAME_OVERHEAD}",
                ErrorCode.FRAME_SIZE_ERROR,
            )

    def _queue(self, frame: frames.Frame) -> None:
        self._queue_encoded(codec.encode(frame))

    def _queue_encoded(self, encoded: bytes) -> None:
        self._control.append(encoded)
        self._control_size += len(encoded)
