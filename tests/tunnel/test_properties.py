"""Property tests: byte delivery, credit accounting, fairness and memory under any interleaving.

The state machine drives a client and a server over a link whose messages stay in flight until
a rule delivers them, so writes, reads (acknowledge_data), window updates, half-closes and
resets interleave in every order hypothesis can find, on several streams in both directions.
Every byte written carries a pattern that depends on its stream, direction and offset, so
"delivered" can be checked as "a prefix of what was written", which is in order and exactly
once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import hypothesis.strategies as st
import pytest
from hypothesis import given
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from clusternet_aa.tunnel.protocol import events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.errors import LocalProtocolError
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.protocol.state import TRANSITIONS, StreamInput
from tests.tunnel.helpers import DIAL, HTTP, PROFILE, ConnectionPair, decode, of_type

CLIENT, SERVER = "client", "server"
SIDES = st.sampled_from([CLIENT, SERVER])
OTHER = {CLIENT: SERVER, SERVER: CLIENT}

# Small windows and frames so that flow control, batching and splitting happen constantly.
SETTINGS = {
    CLIENT: Settings(
        initial_stream_window=3000,
        session_window=7000,
        max_frame_size=1024,
        max_message_size=4096,
    ),
    SERVER: Settings(
        initial_stream_window=2000,
        session_window=5000,
        max_frame_size=2048,
        max_message_size=3000,
    ),
}


def pattern(stream_id: int, sender: str, offset: int, size: int) -> bytes:
    base = stream_id * 7 + (0 if sender == CLIENT else 101)
    return bytes((base + i) % 251 for i in range(offset, offset + size))


@dataclass
class Direction:
    """One direction of one stream: what the sender wrote and what the receiver got."""

    written: int = 0
    ended: bool = False
    delivered: int = 0
    acked: int = 0
    end_seen: bool = False
    on_wire: int = 0  # DATA bytes the sender put on the link
    granted: int = 0  # WINDOW_UPDATE increments the receiver put on the link


@dataclass
class StreamModel:
    stream_id: int
    opener: str
    known: set[str] = field(default_factory=set)
    reset: bool = False
    dirs: dict[str, Direction] = field(
        default_factory=lambda: {CLIENT: Direction(), SERVER: Direction()}
    )


class TunnelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.conns = {
            CLIENT: Connection(Role.CLIENT, SETTINGS[CLIENT]),
            SERVER: Connection(Role.SERVER, SETTINGS[SERVER]),
        }
        self.links: dict[str, deque[bytes]] = {CLIENT: deque(), SERVER: deque()}
        self.streams: dict[int, StreamModel] = {}
        self.session_on_wire = {CLIENT: 0, SERVER: 0}
        self.session_granted = {CLIENT: 0, SERVER: 0}  # granted *by* this side

    # -------------------------------------------------------------- helpers

    def _pick(self, side: str, index: int) -> StreamModel | None:
        known = [s for s in self.streams.values() if side in s.known]
        return known[index % len(known)] if known else None

    def _legal(self, side: str, model: StreamModel, inp: StreamInput) -> bool:
        state = self.conns[side].stream_state(model.stream_id)
        return (model.opener == side, state, inp) in TRANSITIONS

    def _transmit(self, side: str, max_bytes: int | None = None) -> bool:
        data = self.conns[side].data_to_send(max_bytes)
        if not data:
            return False
        peer = OTHER[side]
        for frame in decode(data):
            if isinstance(frame, frames.Data):
                self.streams[frame.stream_id].dirs[side].on_wire += len(frame.data)
                self.session_on_wire[side] += len(frame.data)
            elif isinstance(frame, frames.WindowUpdate):
                if frame.stream_id == 0:
                    self.session_granted[side] += frame.increment
                else:
                    self.streams[frame.stream_id].dirs[peer].granted += frame.increment
        self.links[side].append(data)
        return True

    def _deliver(self, side: str) -> None:
        receiver = OTHER[side]
        for event in self.conns[receiver].receive_message(self.links[side].popleft()):
            self._on_event(receiver, event)

    def _on_event(self, side: str, event: events.Event) -> None:
        peer = OTHER[side]
        match event:
            case events.HelloReceived():
                pass
            case events.StreamOpened(stream_id):
                self.streams[stream_id].known.add(side)
            case events.ResponseReceived(stream_id):
                assert self.streams[stream_id].opener == side
            case events.DataReceived(stream_id, data):
                d = self.streams[stream_id].dirs[peer]
                assert not d.end_seen
                assert data == pattern(stream_id, peer, d.delivered, len(data)), "order"
                d.delivered += len(data)
                assert d.delivered <= d.written, "delivered more than written"
            case events.StreamEnded(stream_id):
                d = self.streams[stream_id].dirs[peer]
                assert not d.end_seen
                assert d.ended
                assert d.delivered == d.written, "END overtook data"
                d.end_seen = True
            case events.StreamReset(stream_id, _code, _reason, remote):
                assert remote, f"a correct peer caused a fault: {event}"
                self.streams[stream_id].reset = True
            case _:
                raise AssertionError(f"unexpected event {event}")

    # -------------------------------------------------------------- rules

    @precondition(lambda self: len(self.streams) < 8)
    @rule(side=SIDES, dial=st.booleans())
    def open_stream(self, side: str, dial: bool) -> None:
        sid = self.conns[side].open_stream(DIAL if dial else HTTP)
        self.streams[sid] = StreamModel(sid, side, {side})

    @rule(side=SIDES, index=st.integers(0, 7), status=st.sampled_from([200, 101, 404]))
    def send_headers(self, side: str, index: int, status: int) -> None:
        model = self._pick(side, index)
        if model is None:
            return
        if self._legal(side, model, StreamInput.SEND_HEADERS):
            self.conns[side].send_headers(model.stream_id, status)
        else:
            with pytest.raises(LocalProtocolError):
                self.conns[side].send_headers(model.stream_id, status)

    @rule(side=SIDES, index=st.integers(0, 7), size=st.integers(0, 5000))
    def write(self, side: str, index: int, size: int) -> None:
        model = self._pick(side, index)
        if model is None:
            return
        d = model.dirs[side]
        payload = pattern(model.stream_id, side, d.written, size)
        if self._legal(side, model, StreamInput.SEND_DATA):
            self.conns[side].send_data(model.stream_id, payload)
            d.written += size
        else:
            with pytest.raises(LocalProtocolError):
                self.conns[side].send_data(model.stream_id, payload)

    @rule(side=SIDES, index=st.integers(0, 7))
    def half_close(self, side: str, index: int) -> None:
        model = self._pick(side, index)
        if model is None:
            return
        if self._legal(side, model, StreamInput.SEND_END):
            self.conns[side].end_stream(model.stream_id)
            model.dirs[side].ended = True
        else:
            with pytest.raises(LocalProtocolError):
                self.conns[side].end_stream(model.stream_id)

    @rule(side=SIDES, index=st.integers(0, 7))
    def reset(self, side: str, index: int) -> None:
        model = self._pick(side, index)
        if model is None:
            return
        if self.conns[side].stream_state(model.stream_id).name != "CLOSED":
            model.reset = True
        self.conns[side].reset_stream(model.stream_id)

    @rule(side=SIDES, index=st.integers(0, 7), fraction=st.floats(0, 1))
    def read(self, side: str, index: int, fraction: float) -> None:
        """The consumer reads part of what arrived and returns the credit."""
        model = self._pick(side, index)
        if model is None:
            return
        d = model.dirs[OTHER[side]]
        size = int((d.delivered - d.acked) * fraction)
        self.conns[side].acknowledge_data(model.stream_id, size)
        d.acked += size

    @rule(side=SIDES, max_bytes=st.sampled_from([None, None, 100, 1500]))
    def transmit(self, side: str, max_bytes: int | None) -> None:
        self._transmit(side, max_bytes)

    @rule(side=SIDES)
    def deliver(self, side: str) -> None:
        if self.links[side]:
            self._deliver(side)

    # -------------------------------------------------------------- invariants

    @invariant()
    def session_is_up(self) -> None:
        assert not self.conns[CLIENT].closed
        assert not self.conns[SERVER].closed

    @invariant()
    def credit_is_never_negative_nor_exceeded(self) -> None:
        for side, conn in self.conns.items():
            peer = OTHER[side]
            assert conn.send_credit(0) >= 0
            if conn.peer_settings is not None:
                window = SETTINGS[peer].session_window
                assert self.session_on_wire[side] <= window + self.session_granted[peer]
            for model in self.streams.values():
                assert conn.send_credit(model.stream_id) >= 0
                d = model.dirs[side]
                window = SETTINGS[peer].initial_stream_window
                assert d.on_wire <= window + d.granted, "sender exceeded its credit"

    @invariant()
    def stream_counts_match_the_live_streams(self) -> None:
        """The O(1) counts behind the concurrency limits agree with a full count."""
        for conn in self.conns.values():
            for local in (True, False):
                live = sum(1 for st in conn._streams.values() if st.opener is local)
                assert conn._count_streams(local=local) == live

    @invariant()
    def unread_bytes_never_exceed_the_window(self) -> None:
        for model in self.streams.values():
            for sender, d in model.dirs.items():
                window = SETTINGS[OTHER[sender]].initial_stream_window
                assert d.delivered - d.acked <= window
                assert d.on_wire - d.acked <= window  # in flight plus unread

    def teardown(self) -> None:
        """Let everything settle: readers read everything; then every byte of every stream that
        was not reset has arrived, and every END too."""
        for _ in range(10_000):
            moved = False
            for side in (CLIENT, SERVER):
                for model in self.streams.values():
                    d = model.dirs[OTHER[side]]
                    if d.delivered > d.acked:
                        self.conns[side].acknowledge_data(model.stream_id, d.delivered - d.acked)
                        d.acked = d.delivered
                moved |= self._transmit(side)
                while self.links[side]:
                    self._deliver(side)
                    moved = True
            if not moved:
                break
        else:  # pragma: no cover - a failure
            raise AssertionError("no quiescence")
        self.session_is_up()
        for model in self.streams.values():
            if model.reset:
                continue
            for d in model.dirs.values():
                assert d.delivered == d.written, f"stream {model.stream_id} lost bytes"
                assert d.end_seen == d.ended
        for conn in self.conns.values():
            for model in self.streams.values():
                assert conn.outbound_buffered(model.stream_id) == 0 or model.reset


TunnelMachine.TestCase.settings = PROFILE
test_tunnel_state_machine = TunnelMachine.TestCase


# ------------------------------------------------------------------ fairness and stalls


@PROFILE
@given(
    small=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    max_frame=st.sampled_from([1024, 4096]),
    message_size=st.sampled_from([8192, 64 * 1024]),
    controls=st.integers(0, 3),
)
def test_data_is_round_robin_and_control_frames_come_first(
    small: list[int], max_frame: int, message_size: int, controls: int
) -> None:
    receiver = Settings(max_frame_size=max_frame, max_message_size=message_size)
    pair = ConnectionPair(receiver)
    s = pair.server.conn
    ids = [pair.client.conn.open_stream(HTTP) for _ in range(len(small) + 1)]
    pair.pump()
    for sid in ids:
        s.send_headers(sid, 200)
    pair.pump()
    bulk, *others = ids
    s.send_data(bulk, bytes(1024 * 1024))
    for sid, size in zip(others, small, strict=True):
        s.send_data(sid, bytes(size))
    for _ in range(controls):
        s.handle_timer(s.next_deadline() or 0.0)
    sent: dict[int, int] = dict.fromkeys(ids, 0)
    while msg := s.data_to_send():
        kinds = decode(msg)
        seen_data = False
        per_stream: dict[int, int] = {}
        for frame in kinds:
            if isinstance(frame, frames.Data):
                seen_data = True
                per_stream[frame.stream_id] = per_stream.get(frame.stream_id, 0) + 1
                sent[frame.stream_id] += len(frame.data)
                assert sent[frame.stream_id] <= Settings().initial_stream_window
            else:
                assert not seen_data, "a control frame queued behind DATA"
        # Round-robin: within a message no stream gets two turns more than another that still
        # had something to send afterwards.
        for count_a in per_stream.values():
            for b, count_b in per_stream.items():
                if count_a >= count_b + 2:
                    assert s.outbound_buffered(b) == 0 or s.send_credit(b) == 0
        pair.client.conn.receive_message(msg)
    # The small streams all completed while the bulk one is stalled on its window.
    for sid, size in zip(others, small, strict=True):
        assert sent[sid] == size
    assert sent[bulk] == Settings().initial_stream_window
    assert s.send_credit(bulk) == 0


@PROFILE
@given(
    rounds=st.integers(1, 15),
    sizes=st.lists(st.integers(1, 4000), min_size=1, max_size=6),
    window=st.sampled_from([1024, 5000, 64 * 1024]),
)
def test_a_stalled_stream_never_blocks_others_and_pins_at_most_its_window(
    rounds: int, sizes: list[int], window: int
) -> None:
    pair = ConnectionPair(Settings(initial_stream_window=window, session_window=2 * window))
    c, s = pair.client.conn, pair.server.conn
    stalled = c.open_stream(HTTP)
    others = [c.open_stream(HTTP) for _ in sizes]
    pair.pump()
    for sid in (stalled, *others):
        s.send_headers(sid, 200)
    s.send_data(stalled, bytes(4 * window + 1))
    expected = dict.fromkeys(others, 0)
    acked = dict.fromkeys(others, 0)
    for _ in range(rounds):
        for sid, size in zip(others, sizes, strict=True):
            s.send_data(sid, bytes(size))
            expected[sid] += size
        for _ in range(2 + max(sizes) // window * 2):  # the readers read whatever arrives
            pair.pump()
            for sid in others:
                got = len(pair.client.data(sid))
                c.acknowledge_data(sid, got - acked[sid])
                acked[sid] = got
        for sid in others:
            assert len(pair.client.data(sid)) == expected[sid]
        # The stalled reader's undelivered bytes never exceed its window.
        assert len(pair.client.data(stalled)) <= window
    assert len(pair.client.data(stalled)) == window
    assert not of_type(pair.client.events + pair.server.events, events.StreamReset)
