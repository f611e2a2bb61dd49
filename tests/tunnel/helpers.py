"""Test helpers for the sans-IO tunnel core: a connected pair and a frame factory.

:class:`ConnectionPair` plays the part of h11's ``ConnectionPair``: two :class:`Connection`
objects joined by an in-memory link. Nothing moves until a test says so, which lets a test
interleave actions on both sides exactly as it likes. :func:`raw` builds wire messages by hand,
including malformed ones, for the bad-input tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
from hypothesis import settings

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.events import Event
from clusternet_aa.tunnel.protocol.settings import Settings

T = TypeVar("T")

# Hypothesis budgets. The default keeps the whole tunnel suite well under 30 s; set
# TUNNEL_HYPOTHESIS_PROFILE=deep for a long soak run.
settings.register_profile("tunnel-fast", max_examples=60, deadline=None)
settings.register_profile("tunnel-deep", max_examples=2000, deadline=None)
PROFILE = settings.get_profile(
    "tunnel-" + os.environ.get("TUNNEL_HYPOTHESIS_PROFILE", "fast").removeprefix("tunnel-")
)

HTTP = frames.HttpRequestHead("GET", "/healthz", (("accept", "*/*"),))
DIAL = frames.DialTarget("tcp", "127.0.0.1:6443")


def message(*items: frames.Frame) -> bytes:
    """One websocket message holding ``items``, encoded as the real encoder does."""
    return b"".join(codec.encode(item) for item in items)


def raw(*items: Any) -> bytes:
    """One websocket message of arbitrary msgpack values (valid frames or not)."""
    return b"".join(msgpack.packb(item, use_bin_type=True) for item in items)


def hello(settings: Settings | None = None, **overrides: Any) -> frames.Hello:
    """A HELLO frame; ``overrides`` replace or add wire fields (to break it on purpose)."""
    fields = (settings or Settings()).to_wire()
    fields.update(overrides)
    return frames.Hello(fields)


def decode(data: bytes, *, max_frame_size: int = 16 * 1024 * 1024) -> list[frames.Frame]:
    """The frames of an outbound message (trusting our own encoder)."""
    return codec.decode_message(data, max_frame_size=max_frame_size) if data else []


def drain_frames(conn: Connection, max_bytes: int | None = None) -> list[frames.Frame]:
    """Every frame ``conn`` has to send right now, across as many messages as it takes."""
    out: list[frames.Frame] = []
    while data := conn.data_to_send(max_bytes):
        out.extend(decode(data))
    return out


@dataclass
class Side:
    """One end of the pair and what it has seen so far."""

    conn: Connection
    events: list[Event] = field(default_factory=list)
    messages_sent: int = 0

    def take_events(self) -> list[Event]:
        taken, self.events = self.events, []
        return taken

    def data(self, stream_id: int) -> bytes:
        """All bytes delivered for a stream so far (events kept in place)."""
        return b"".join(
            e.data
            for e in self.events
            if isinstance(e, events.DataReceived) and e.stream_id == stream_id
        )


class ConnectionPair:
    """A client and a server Connection with an in-memory link between them.

    ``send(side)`` moves one websocket message from ``side`` to the other end and returns the
    events it produced there; ``pump()`` moves messages both ways until neither side has
    anything left to say. Events also accumulate on each :class:`Side`.
    """

    def __init__(
        self,
        client_settings: Settings | None = None,
        server_settings: Settings | None = None,
        *,
        handshake: bool = True,
        now: float = 0.0,
    ) -> None:
        self.client = Side(Connection(Role.CLIENT, client_settings, now=now))
        self.server = Side(Connection(Role.SERVER, server_settings, now=now))
        if handshake:
            self.pump()
            self.client.take_events()
            self.server.take_events()

    def other(self, side: Side) -> Side:
        return self.server if side is self.client else self.client

    def send(self, side: Side, max_bytes: int | None = None) -> list[events.Event]:
        """Deliver ``side``'s next message to its peer; [] if it had nothing to send."""
        data = side.conn.data_to_send(max_bytes)
        if not data:
            return []
        side.messages_sent += 1
        produced = self.other(side).conn.receive_message(data)
        self.other(side).events.extend(produced)
        return produced

    def pump(self, *, limit: int = 100_000) -> None:
        """Exchange messages until both sides are quiet."""
        for _ in range(limit):
            moved = False
            for side in (self.client, self.server):
                data = side.conn.data_to_send()
                if data:
                    moved = True
                    side.messages_sent += 1
                    peer = self.other(side)
                    peer.events.extend(peer.conn.receive_message(data))
            if not moved:
                return
        raise AssertionError("the pair kept talking: livelock?")  # pragma: no cover - a failure

    def request(
        self, target: frames.Target = HTTP, *, status: int = 200
    ) -> tuple[int, list[events.Event]]:
        """Client opens a stream, server answers its head; returns the id once both know."""
        stream_id = self.client.conn.open_stream(target, {"user": "alice"})
        self.pump()
        self.server.conn.send_headers(stream_id, status, (("content-type", "text/plain"),))
        self.pump()
        return stream_id, self.client.events + self.server.events


def of_type(items: Iterable[object], kind: type[T]) -> list[T]:
    return [item for item in items if isinstance(item, kind)]


def goaways(conn: Connection) -> list[frames.GoAway]:
    """GOAWAY frames waiting in ``conn``'s output (consumes the output)."""
    return of_type(drain_frames(conn), frames.GoAway)


def handshaken(role: Role, settings: Settings | None = None) -> Connection:
    """A Connection that has received a default peer's HELLO and sent its own."""
    conn = Connection(role, settings)
    conn.receive_message(message(hello()))
    drain_frames(conn)
    return conn
