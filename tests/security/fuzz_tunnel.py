"""Structure-aware fuzzing of the sans-IO tunnel core, across many sessions at once.

Run the full campaign with::

    python -m tests.security.fuzz_tunnel --frames 1000000

Many victim :class:`Connection` objects (servers, as the hub is, and clients, as the agent is)
are fed hostile messages in rotation. Most messages start from a frame that would be *legal* in
the victim's current state (a DATA on a stream it has open, an OPEN with the next id, a
WINDOW_UPDATE within bounds...), so the fuzzer reaches deep into the stream state machine, and
are then mutated: fields swapped, dropped or duplicated, values replaced with other msgpack
types, huge or negative integers, deeply nested maps and arrays, length prefixes and type bytes
rewritten, truncation, random bytes, several frames glued into one message. A session that a
fault ends is replaced by a fresh one.

Meanwhile a *control* pair of Connections keeps exchanging valid traffic (open, data both ways,
end) and checks every byte: it must stay correct whatever the victims go through.

Checked for every message: ``receive_message`` never raises; it returns within
``--hang-seconds``; a session that ends says so with ``ConnectionTerminated`` and a GOAWAY; a
closed session ignores input; the control backlog is flushed by ``data_to_send``; no victim holds
more streams than it allows. Figures printed at the end: frames, frames/s, sessions, outcomes,
peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.protocol.state import StreamState

#: Small limits so flow-control, frame-size and concurrency faults are reachable.
VICTIM_SETTINGS = Settings(
    initial_stream_window=4096,
    session_window=16384,
    max_frame_size=1024,
    max_message_size=8192,
    max_concurrent_streams=16,
)

HUGE_INTS = [
    0,
    -1,
    1,
    2**7,
    2**8,
    2**15,
    2**16,
    2**31 - 1,
    2**31,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    -(2**31),
    -(2**63),
]
FT = frames.FrameType


class FuzzFailure(AssertionError):
    """An invariant broke; the message that broke it is in ``args``."""


@dataclass
class Victim:
    conn: Connection
    role: Role
    #: Stream ids the peer (us, the fuzzer) opened, and those the victim opened.
    peer_streams: list[int] = field(default_factory=list)
    own_streams: list[int] = field(default_factory=list)
    next_peer_id: int = 0
    messages: int = 0


@dataclass
class Stats:
    frames: int = 0
    #: Of ``frames``, those mutated (the rest are plausible frames sent as they are).
    mutated: int = 0
    sessions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    control_rounds: int = 0
    slowest: float = 0.0


# ---------------------------------------------------------------------------- generators


def _text(rng: random.Random) -> str:
    choices = ["", "x", "GET", "/api", "\x00", "\r\nInjected: 1", "é" * 50, "\ud7ff" * 3]
    if rng.random() < 0.3:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(0, 40)))
    return rng.choice(choices)


def _nested(rng: random.Random, depth: int) -> Any:
    """A value nested ``depth`` levels in maps and arrays."""
    value: Any = rng.choice([1, "x", b"y", None])
    for level in range(depth):
        value = {f"k{level}": value} if rng.random() < 0.5 else [value]
    return value


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Any msgpack value, type-confused on purpose."""
    pick = rng.randrange(13)
    if pick == 0:
        return rng.choice(HUGE_INTS)
    if pick == 1:
        return rng.random() * rng.choice([1, 1e300, -1e-300])
    if pick == 2:
        return rng.choice([True, False, None])
    if pick == 3:
        return _text(rng)
    if pick == 4:
        return rng.randbytes(rng.randrange(0, 64))
    if pick == 5 and depth < 3:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if pick == 6 and depth < 3:
        return {_text(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}
    if pick == 7:
        return _nested(rng, rng.randrange(1, 400))
    if pick == 8 and depth < 3:
        # A map whose keys are not strings (ints, bytes): the decoder must refuse or cope.
        return {rng.choice([1, b"k", 2.5]): 1}
    if pick == 9:
        return rng.randrange(-(2**63), 2**64)
    if pick == 10:
        return list(range(rng.randrange(0, 2000)))
    if pick == 11:
        return msgpack.ExtType(rng.randrange(0, 128), rng.randbytes(rng.randrange(0, 16)))
    return rng.randrange(0, 20)


def plausible_frame(rng: random.Random, victim: Victim) -> list[Any]:
    """A frame (as its wire list) that is legal, or nearly, for the victim's current state."""
    streams = victim.peer_streams + victim.own_streams
    sid = rng.choice(streams) if streams and rng.random() < 0.9 else rng.randrange(1, 40)
    kind = rng.randrange(12)
    if kind <= 1:
        victim.next_peer_id += 2
        new = victim.next_peer_id
        victim.peer_streams.append(new)
        if rng.random() < 0.5:
            head = {
                "method": rng.choice(["GET", "POST", "PATCH", "DELETE"]),
                "path": rng.choice(["/api", "/api/v1/pods?watch=1", "/../../etc", "/%2e%2e/"]),
                "headers": [["accept", "*/*"], ["x", _text(rng)]],
            }
            return [FT.OPEN, new, "http", head, {"user": "alice", "groups": ["g"]}]
        return [FT.OPEN, new, "dial", {"network": "tcp", "address": "127.0.0.1:6443"}, {}]
    if kind <= 4:
        size = rng.choice([0, 1, 100, 1000, 1024]) if rng.random() < 0.97 else 1025
        return [FT.DATA, sid, rng.randbytes(size)]
    if kind == 5:
        return [FT.HEADERS, sid, rng.choice([101, 200, 404, 500]), [["a", "b"]], {}]
    if kind == 6:
        return [FT.WINDOW_UPDATE, sid if rng.random() < 0.7 else 0, rng.choice([1, 4096, 2**30])]
    if kind == 7:
        return [FT.END, sid]
    if kind == 8:
        return [FT.RESET, sid, rng.randrange(0, 14), _text(rng)]
    if kind == 9:
        return [FT.PING, 0, rng.randrange(0, 2**32)]
    if kind == 10:
        return [FT.PONG, 0, rng.randrange(0, 2**32)]
    if rng.random() < 0.05:
        return [FT.GOAWAY, 0, rng.randrange(0, 64), rng.randrange(0, 13), _text(rng)]
    if rng.random() < 0.05:
        return [FT.HELLO, 0, Settings().to_wire()]
    return [FT.WINDOW_UPDATE, 0, rng.randrange(1, 2**16)]


# ---------------------------------------------------------------------------- mutators


def _pack(item: Any) -> bytes:
    try:
        return msgpack.packb(item, use_bin_type=True)
    except (ValueError, OverflowError, TypeError):
        return b"\xc1"  # the never-used msgpack byte


def mutate_structure(rng: random.Random, item: list[Any]) -> list[Any]:
    """Field-level mutations of a frame's wire list."""
    item = list(item)
    for _ in range(rng.randrange(1, 3)):
        op = rng.randrange(8)
        if op == 0 and len(item) >= 2:  # swap two fields
            i, j = rng.sample(range(len(item)), 2)
            item[i], item[j] = item[j], item[i]
        elif op == 1 and item:  # type confusion on one field
            item[rng.randrange(len(item))] = random_value(rng)
        elif op == 2 and item:  # drop a field
            del item[rng.randrange(len(item))]
        elif op == 3:  # an extra field
            item.insert(rng.randrange(len(item) + 1), random_value(rng))
        elif op == 4 and item:  # huge or negative integers where integers go
            item[rng.randrange(len(item))] = rng.choice(HUGE_INTS)
        elif op == 5:  # another frame type with these fields
            if item:
                item[0] = rng.randrange(-2, 16)
        elif op == 6 and len(item) >= 2:  # stream id of the wrong parity, 0 or past the end
            item[1] = rng.choice(
                [0, 1, 2, 3, 2**63 - 1, item[1] + 1 if type(item[1]) is int else 1]
            )
        elif op == 7 and len(item) >= 4 and type(item[3]) is dict:  # corrupt a target map
            target = dict(item[3])
            key = rng.choice([*target, "method", "path", "headers", "address"])
            target[key] = random_value(rng)
            item[3] = target
    return item


_MSGPACK_PREFIXES = [0x90, 0x9F, 0x80, 0x8F, 0xA0, 0xBF, 0xC4, 0xC5, 0xC6, 0xD9, 0xDA, 0xDB]
_MSGPACK_PREFIXES += [0xDC, 0xDD, 0xDE, 0xDF, 0xC1, 0xCA, 0xCB, 0xCC, 0xCF, 0xD3, 0xC7, 0xC9]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Byte-level mutations: flips, type/length bytes, truncation, insertion, splicing."""
    buf = bytearray(data or b"\x90")
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(7)
        if op == 0:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:  # a msgpack type or length prefix where one may not belong
            buf[rng.randrange(len(buf))] = rng.choice(_MSGPACK_PREFIXES)
        elif op == 2:  # a length field claiming far more (or less) than follows
            pos = rng.randrange(len(buf))
            buf[pos : pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00", b"\x7f\xff"])
        elif op == 3 and len(buf) > 1:  # truncation
            del buf[rng.randrange(1, len(buf)) :]
        elif op == 4:
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = rng.randbytes(rng.randrange(1, 16))
        elif op == 5:  # duplicate a slice (frames glued back to back)
            start = rng.randrange(len(buf))
            buf.extend(buf[start : start + rng.randrange(1, 64)])
        elif op == 6 and buf:
            buf[0] = rng.choice([0x92, 0x93, 0x94, 0x95, 0x96, 0xDC, 0x91])
    return bytes(buf)


def special_message(rng: random.Random) -> bytes:
    """Hand-made nasties: deep nesting, claimed-huge containers, empty and oversized input."""
    pick = rng.randrange(8)
    if pick == 0:
        return b"\x91" * rng.randrange(100, 20000) + b"\x00"
    if pick == 1:
        return b"\x81\xa1k" * rng.randrange(100, 5000) + b"\x00"
    if pick == 2:  # an array that claims 2^32-1 elements
        return b"\xdd\xff\xff\xff\xff" + b"\x00" * rng.randrange(0, 32)
    if pick == 3:  # a bin that claims 4 GiB
        return b"\x93\x03\x01\xc6\xff\xff\xff\xff" + b"a" * rng.randrange(0, 32)
    if pick == 4:
        return b""
    if pick == 5:  # bigger than max_message_size
        return codec.encode(frames.Data(1, b"x" * (VICTIM_SETTINGS.max_message_size + 1)))
    if pick == 6:  # many valid pings in one message
        return codec.encode(frames.Ping(1)) * rng.randrange(1, 200)
    return rng.randbytes(rng.randrange(1, 256))


def hostile_message(rng: random.Random, victim: Victim) -> tuple[bytes, bool]:
    """The next message for ``victim`` and whether it is mutated (False: a plausible frame,
    sent as is to keep the session alive and deep in its state machine)."""
    roll = rng.random()
    if roll < 0.40:
        return _pack(plausible_frame(rng, victim)), False
    if roll < 0.65:
        return _pack(mutate_structure(rng, plausible_frame(rng, victim))), True
    if roll < 0.87:
        return mutate_bytes(rng, _pack(plausible_frame(rng, victim))), True
    if roll < 0.94:  # several frames in one message, one of them mutated
        parts = [_pack(plausible_frame(rng, victim)) for _ in range(rng.randrange(2, 6))]
        i = rng.randrange(len(parts))
        parts[i] = mutate_bytes(rng, parts[i])
        return b"".join(parts), True
    if roll < 0.98:
        return special_message(rng), True
    return _pack(random_value(rng)), True


# ---------------------------------------------------------------------------- sessions


def new_victim(rng: random.Random, stats: Stats) -> Victim:
    role = Role.SERVER if rng.random() < 0.7 else Role.CLIENT
    conn = Connection(role, VICTIM_SETTINGS)
    victim = Victim(conn, role, next_peer_id=-1 if role is Role.SERVER else 0)
    stats.sessions += 1
    conn.data_to_send()  # its HELLO
    if rng.random() < 0.97:  # usually a proper HELLO first, so the fuzzer gets past setup
        conn.receive_message(codec.encode(frames.Hello(Settings().to_wire())))
        for _ in range(rng.randrange(0, 3)):
            victim.own_streams.append(conn.open_stream(frames.HttpRequestHead("GET", "/x")))
        # Warm up: streams the peer opened, some answered and carrying data, so mutations
        # land on a session with live streams in various states.
        for _ in range(rng.randrange(0, 4)):
            victim.next_peer_id += 2
            sid = victim.next_peer_id
            victim.peer_streams.append(sid)
            conn.receive_message(
                codec.encode(frames.Open(sid, frames.HttpRequestHead("GET", "/w")))
                + codec.encode(frames.Data(sid, b"w" * rng.randrange(0, 500)))
            )
            if rng.random() < 0.7:
                conn.send_headers(sid, 200)
                conn.send_data(sid, b"r" * rng.randrange(0, 5000))
        while conn.data_to_send():
            pass
    return victim


def _live(conn: Connection, stream_id: int) -> bool:
    return not conn.closed and conn.stream_state(stream_id) is not StreamState.CLOSED


def feed(victim: Victim, message: bytes, stats: Stats, hang_seconds: float) -> None:
    conn = victim.conn
    was_closed = conn.closed
    started = time.perf_counter()
    try:
        out = conn.receive_message(message)
    except Exception as exc:
        raise FuzzFailure(f"receive_message raised {exc!r} on {message[:200]!r}") from exc
    elapsed = time.perf_counter() - started
    stats.slowest = max(stats.slowest, elapsed)
    if elapsed > hang_seconds:
        raise FuzzFailure(f"receive_message took {elapsed:.2f}s on {message[:200]!r}")
    if was_closed:
        if out:
            raise FuzzFailure("a closed session produced events")
        return
    terminated = [e for e in out if isinstance(e, events.ConnectionTerminated)]
    if conn.closed:
        if len(terminated) != 1 or out[-1] is not terminated[0]:
            raise FuzzFailure(f"session closed without one final ConnectionTerminated: {out}")
        stats.outcomes["session:" + terminated[0].code.name] += 1
    elif terminated:
        raise FuzzFailure("ConnectionTerminated on a session that is still open")
    for event in out:
        if isinstance(event, events.StreamReset) and not event.remote and not conn.closed:
            stats.outcomes["stream-reset:" + event.code.name] += 1
        elif isinstance(event, events.StreamOpened) and _live(conn, event.stream_id):
            # The application's part: answer some, reset some, leave some open.
            if random.random() < 0.5:
                conn.send_headers(event.stream_id, 200)
            elif random.random() < 0.2:
                conn.reset_stream(event.stream_id, ErrorCode.CANCEL, "fuzz")
        elif isinstance(event, events.DataReceived) and _live(conn, event.stream_id):
            conn.acknowledge_data(event.stream_id, len(event.data))
    if conn.open_streams > 2 * VICTIM_SETTINGS.max_concurrent_streams + 8:
        raise FuzzFailure(f"{conn.open_streams} streams held: limit not enforced")
    # Flush what the victim wants to say, as a driver would; the backlog must empty.
    for _ in range(10_000):
        if not conn.data_to_send():
            break
    if conn.control_backlog:
        raise FuzzFailure("control backlog not flushed")


class Control:
    """A healthy pair exchanging valid traffic; every byte is checked."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)
        self.pump()

    def pump(self) -> tuple[list[events.Event], list[events.Event]]:
        got_client: list[events.Event] = []
        got_server: list[events.Event] = []
        for _ in range(1000):
            moved = False
            if data := self.client.data_to_send():
                got_server += self.server.receive_message(data)
                moved = True
            if data := self.server.data_to_send():
                got_client += self.client.receive_message(data)
                moved = True
            if not moved:
                return got_client, got_server
        raise FuzzFailure("control pair livelocked")

    def round(self) -> None:
        payload = self.rng.randbytes(self.rng.randrange(0, 3000))
        sid = self.client.open_stream(frames.HttpRequestHead("POST", "/echo"), {"user": "ok"})
        self.client.send_data(sid, payload)
        self.client.end_stream(sid)
        _, at_server = self.pump()
        body = b"".join(e.data for e in at_server if isinstance(e, events.DataReceived))
        if body != payload or not any(isinstance(e, events.StreamEnded) for e in at_server):
            raise FuzzFailure(f"control session corrupted on the way up: {at_server}")
        self.server.acknowledge_data(sid, len(body))
        self.server.send_headers(sid, 200)
        self.server.send_data(sid, payload[::-1])
        self.server.end_stream(sid)
        at_client, _ = self.pump()
        back = b"".join(e.data for e in at_client if isinstance(e, events.DataReceived))
        if back != payload[::-1] or self.client.closed or self.server.closed:
            raise FuzzFailure(f"control session corrupted on the way down: {at_client}")
        self.client.acknowledge_data(sid, len(back))
        self.pump()
        if self.client.open_streams or self.server.open_streams:
            raise FuzzFailure("control streams leaked")


def run(
    frames_total: int,
    *,
    seed: int = 2026,
    sessions: int = 64,
    control_every: int = 500,
    hang_seconds: float = 2.0,
    progress: Callable[[Stats, float], None] | None = None,
) -> tuple[Stats, float]:
    """Feed hostile messages to ``sessions`` victims in rotation until ``frames_total`` of them
    were mutated ones."""
    rng = random.Random(seed)
    random.seed(seed)
    stats = Stats()
    victims = [new_victim(rng, stats) for _ in range(sessions)]
    control = Control(rng)
    started = time.perf_counter()
    i = -1
    while stats.mutated < frames_total:
        i += 1
        slot = i % sessions
        victim = victims[slot]
        message, mutated = hostile_message(rng, victim)
        feed(victim, message, stats, hang_seconds)
        victim.messages += 1
        stats.frames += 1
        stats.mutated += mutated
        if victim.conn.closed:
            stats.outcomes["messages-per-session"] += victim.messages
            victims[slot] = new_victim(rng, stats)
        elif rng.random() < 0.01:
            victim.conn.handle_timer(victim.conn.next_deadline() or 0.0)
        if i % control_every == 0:
            control.round()
            stats.control_rounds += 1
        if progress is not None and i and i % 100_000 == 0:
            progress(stats, time.perf_counter() - started)
    control.round()
    stats.control_rounds += 1
    return stats, time.perf_counter() - started


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000, help="mutated frames to feed")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--hang-seconds", type=float, default=2.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    def progress(stats: Stats, elapsed: float) -> None:
        sys.stderr.write(
            f"  {stats.frames:>9} frames ({stats.mutated} mutated)  "
            f"{stats.frames / elapsed:>8.0f}/s  {stats.sessions} sessions  "
            f"rss {peak_rss_mib():.0f} MiB\n"
        )

    rss_before = peak_rss_mib()
    stats, elapsed = run(
        args.frames,
        seed=args.seed,
        sessions=args.sessions,
        hang_seconds=args.hang_seconds,
        progress=None if args.json else progress,
    )
    figures = {
        "frames": stats.frames,
        "mutated_frames": stats.mutated,
        "seconds": round(elapsed, 1),
        "frames_per_second": round(stats.frames / elapsed),
        "sessions": stats.sessions,
        "concurrent_sessions": args.sessions,
        "control_rounds_ok": stats.control_rounds,
        "slowest_message_ms": round(stats.slowest * 1000, 2),
        "peak_rss_mib_start": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "messages_per_session": round(
            stats.outcomes.pop("messages-per-session", 0) / max(stats.sessions, 1), 2
        ),
        "outcomes": dict(stats.outcomes.most_common()),
    }
    sys.stdout.write(json.dumps(figures, indent=None if args.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
