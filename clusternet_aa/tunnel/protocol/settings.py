"""Session settings exchanged in HELLO, and their limits.

Both sides announce their own settings; each then obeys the *peer's* values when sending
(window sizes, frame and message sizes, concurrent streams).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusternet_aa.tunnel.protocol.errors import ErrorCode, RemoteProtocolError

#: Protocol versions this implementation speaks, newest first.
SUPPORTED_VERSIONS = (1,)
#: The websocket subprotocol that selects each version.
SUBPROTOCOLS = {1: "clusternet.tunnel.v1"}

KiB = 1024
MiB = 1024 * KiB

#: Bytes a frame's envelope may add to its payload (type, id, msgpack headers).
FRAME_OVERHEAD = 64


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What one side of a session accepts. Sizes are in bytes, intervals in seconds."""

    version: int = 1
    #: Credit a new stream starts with for DATA sent *to* us.
    initial_stream_window: int = 256 * KiB
    #: Credit for all DATA in flight to us on the session.
    session_window: int = 16 * MiB
    #: Largest DATA payload we accept; other frames must also fit in it (plus overhead).
    max_frame_size: int = 64 * KiB
    #: Largest websocket message (one or more frames) we accept.
    max_message_size: int = 1 * MiB
    #: Streams the peer may have open towards us at once; more are refused.
    max_concurrent_streams: int = 10_000
    #: Seconds between keepalive PINGs.
    keepalive_interval: float = 15.0
    #: The link is declared dead after this many intervals without hearing from the peer.
    keepalive_misses: int = 3

    def __post_init__(self) -> None:
        if self.version not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported tunnel version {self.version}")
        if not 1 <= self.initial_stream_window <= 2**31 - 1:
            raise ValueError("initial_stream_window must be in [1, 2**31-1]")
        if not 1 <= self.session_window <= 2**31 - 1:
            raise ValueError("session_window must be in [1, 2**31-1]")
        if not 1 * KiB <= self.max_frame_size <= 16 * MiB:
            raise ValueError("max_frame_size must be in [1 KiB, 16 MiB]")
        if self.max_message_size < self.max_frame_size + FRAME_OVERHEAD:
            raise ValueError("max_message_size must hold at least one full frame")
        if self.max_concurrent_streams < 1:
            raise ValueError("max_concurrent_streams must be positive")
        if self.keepalive_interval <= 0 or self.keepalive_misses < 1:
            raise ValueError("keepalive_interval and keepalive_misses must be positive")

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "initial_stream_window": self.initial_stream_window,
            "session_window": self.session_window,
            "max_frame_size": self.max_frame_size,
            "max_message_size": self.max_message_size,
            "max_concurrent_streams": self.max_concurrent_streams,
        }

    @classmethod
    def from_wire(cls, fields: Mapping[str, Any]) -> Settings:
        """Parse a peer's HELLO settings; unknown keys are ignored for forward compatibility."""
        version = fields.get("version")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise RemoteProtocolError(
                f"peer speaks tunnel version {version!r}, we speak {list(SUPPORTED_VERSIONS)}",
                ErrorCode.UNSUPPORTED_VERSION,
            )
        values: dict[str, int] = {}
        for key in (
            "initial_stream_window",
            "session_window",
            "max_frame_size",
            "max_message_size",
            "max_concurrent_streams",
        ):
            value = fields.get(key)
            if type(value) is not int:
                raise RemoteProtocolError(f"HELLO setting {key} must be an integer")
            values[key] = value
        try:
            return cls(version=version, **values)
        except ValueError as exc:
            raise RemoteProtocolError(f"bad HELLO settings: {exc}") from None
