"""Tunnel error codes and the protocol error hierarchy.

Every error carries the wire code that goes into a RESET (stream-level fault) or GOAWAY
(session-level fault) frame, so the IO layer never has to guess which code to send. As in h11,
a :class:`LocalProtocolError` means *we* were asked to do something illegal (a bug in the
caller), while a :class:`RemoteProtocolError` means the peer sent something illegal.
"""

from __future__ import annotations

import enum

from clusternet_aa.errors import ClusternetError


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY frames. Values are part of the wire format."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    STREAM_CLOSED = 4
    FRAME_SIZE_ERROR = 5
    REFUSED_STREAM = 6
    CANCEL = 7
    DIAL_FAILED = 8
    UNSUPPORTED_VERSION = 9
    KEEPALIVE_TIMEOUT = 10
    FORBIDDEN = 11
    GOING_AWAY = 12

    @classmethod
    def from_wire(cls, value: int) -> ErrorCode:
        """Unknown codes from a newer peer read as INTERNAL_ERROR rather than failing."""
        try:
            return cls(value)
        except ValueError:
            return cls.INTERNAL_ERROR


class TunnelError(ClusternetError):
    """Base of every tunnel error; ``code`` is what goes on the wire."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ProtocolError(TunnelError):
    """A violation of the tunnel protocol."""

    code = ErrorCode.PROTOCOL_ERROR


class LocalProtocolError(ProtocolError):
    """The local application asked for something the protocol forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol. ``stream_id`` is set when only one stream is at fault."""

    def __init__(self, message: str, code: ErrorCode | None = None, *, stream_id: int = 0) -> None:
        super().__init__(message, code)
        self.stream_id = stream_id


class FrameTooLargeError(RemoteProtocolError):
    """A frame or message exceeds the negotiated maximum size."""

    code = ErrorCode.FRAME_SIZE_ERROR


class FlowControlError(RemoteProtocolError):
    """The peer sent more DATA than the credit it was given."""

    code = ErrorCode.FLOW_CONTROL_ERROR


class StreamClosedError(LocalProtocolError):
    """The stream cannot take this action any more (ended, reset or unknown)."""

    code = ErrorCode.STREAM_CLOSED


class ConnectionClosedError(LocalProtocolError):
    """The session is closed, or draining and refusing new streams."""

    code = ErrorCode.GOING_AWAY
