"""The tunnel's frames: one frozen dataclass per frame type.

On the wire every frame is a msgpack array whose first element is the :class:`FrameType` and
second the stream id (0 for session frames); the remaining elements are listed per class, in
order. ``docs/tunnel.md`` is the normative description.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

#: HTTP header list as it travels: ordered (name, value) pairs, repeats allowed.
Headers = tuple[tuple[str, str], ...]


class FrameType(enum.IntEnum):
    HELLO = 0
    OPEN = 1
    HEADERS = 2
    DATA = 3
    WINDOW_UPDATE = 4
    END = 5
    RESET = 6
    PING = 7
    PONG = 8
    GOAWAY = 9


@dataclass(frozen=True)
class HttpRequestHead:
    """The target of an L7 stream: an HTTP request the far side performs."""

    method: str
    path: str
    headers: Headers = ()

    # Made for every proxied request on both sides: writing the instance dict costs about half
    # of the generated frozen ``__init__`` (one ``object.__setattr__`` per field).
    def __init__(self, method: str, path: str, headers: Headers = ()) -> None:
        fields = self.__dict__
        fields["method"] = method
        fields["path"] = path
        fields["headers"] = headers


@dataclass(frozen=True)
class DialTarget:
    """The target of a raw byte stream: a network address the far side connects to."""

    network: str
    address: str


Target = HttpRequestHead | DialTarget


@dataclass(frozen=True)
class Hello:
    settings: dict[str, Any]


@dataclass(frozen=True)
class Open:
    stream_id: int
    target: Target
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseHeaders:
    """HEADERS: the response head of a stream (for a dial stream: 200 once connected)."""

    stream_id: int
    status: int
    headers: Headers = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class WindowUpdate:
    """Credit returned by the receiver; stream id 0 means the session window."""

    stream_id: int
    increment: int


@dataclass(frozen=True)
class End:
    """The sender's half of the stream is finished (half-close)."""

    stream_id: int


@dataclass(frozen=True)
class Reset:
    stream_id: int
    code: int
    reason: str = ""


@dataclass(frozen=True)
class Ping:
    opaque: int


@dataclass(frozen=True)
class Pong:
    opaque: int


@dataclass(frozen=True)
class GoAway:
    """The sender accepts no stream above ``last_stream_id``; code 0 means a graceful drain."""

    last_stream_id: int
    code: int
    reason: str = ""


Frame = Hello | Open | ResponseHeaders | Data | WindowUpdate | End | Reset | Ping | Pong | GoAway
