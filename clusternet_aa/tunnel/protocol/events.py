"""Events the protocol core hands to its IO layer after reading the peer's bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.frames import Headers, Target
from clusternet_aa.tunnel.protocol.settings import Settings

# The events made for every proxied request (StreamOpened, ResponseReceived, DataReceived,
# StreamEnded) define their own ``__init__``: a frozen dataclass's generated one stores each
# field with ``object.__setattr__``, about twice the cost of writing the instance dict. Fields,
# defaults, equality, hashing, repr, ``__match_args__`` and immutability are the dataclass's.

#: Stands for "no metadata given", so each event still gets a fresh dict of its own.
_NO_METADATA: dict[str, Any] = {}


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

    def __init__(
        self, stream_id: int, target: Target, metadata: dict[str, Any] = _NO_METADATA
    ) -> None:
        fields = self.__dict__
        fields["stream_id"] = stream_id
        fields["target"] = target
        fields["metadata"] = {} if metadata is _NO_METADATA else metadata


@dataclass(frozen=True)
class ResponseReceived:
    stream_id: int
    status: int
    headers: Headers
    metadata: dict[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        stream_id: int,
        status: int,
        headers: Headers,
        metadata: dict[str, Any] = _NO_METADATA,
    ) -> None:
        fields = self.__dict__
        fields["stream_id"] = stream_id
        fields["status"] = status
        fields["headers"] = headers
        fields["metadata"] = {} if metadata is _NO_METADATA else metadata


@dataclass(frozen=True)
class DataReceived:
    """Bytes for a stream; credit returns when the consumer calls ``acknowledge_data``."""

    stream_id: int
    data: bytes

    def __init__(self, stream_id: int, data: bytes) -> None:
        fields = self.__dict__
        fields["stream_id"] = stream_id
        fields["data"] = data


@dataclass(frozen=True)
class StreamEnded:
    """The peer finished its half of the stream."""

    stream_id: int

    def __init__(self, stream_id: int) -> None:
        self.__dict__["stream_id"] = stream_id


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
