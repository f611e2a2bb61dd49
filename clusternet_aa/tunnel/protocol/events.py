"""Events the protocol core hands to its IO layer after reading the peer's bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.frames import Headers, Target
from clusternet_aa.tunnel.protocol.settings import Settings


@dataclass(frozen=True)
class HelloReceived:
    """The peer's settings arrived; the session is fully established."""

    settings: Settings


@dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream towards us; answer it with HEADERS (or reset it)."""

    stream_id: int
    target: Target
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseReceived:
    stream_id: int
    status: int
    headers: Headers
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataReceived:
    """Bytes for a stream; credit returns when the consumer calls ``acknowledge_data``."""

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The peer finished its half of the stream."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    """The stream is gone. ``remote`` is False when we reset it because of the peer's fault."""

    stream_id: int
    code: ErrorCode
    reason: str
    remote: bool


@dataclass(frozen=True)
class PongReceived:
    opaque: int


@dataclass(frozen=True)
class GoAwayReceived:
    """The peer drains (NO_ERROR) or gives up; our streams above ``last_stream_id`` were refused."""

    last_stream_id: int
    code: ErrorCode
    reason: str


@dataclass(frozen=True)
class ConnectionTerminated:
    """The session is over: by our decision (a peer fault, a dead link) or by the peer's GOAWAY."""

    code: ErrorCode
    reason: str
    remote: bool


Event = (
    HelloReceived
    | StreamOpened
    | ResponseReceived
    | DataReceived
    | StreamEnded
    | StreamReset
    | PongReceived
    | GoAwayReceived
    | ConnectionTerminated
)
