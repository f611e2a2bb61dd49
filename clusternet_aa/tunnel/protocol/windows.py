"""Credit-based flow control, one window per stream and one per session.

The sender holds *credit*: bytes it may still send. The receiver holds a *window*: bytes it has
promised to accept. Credit returns in WINDOW_UPDATE frames once the receiver's consumer has
read the data (streams) or once data has left the pipe (session). Updates are batched: one is
sent when a quarter of the window has been consumed, which keeps the frame rate low without
letting the sender stall.
"""

from __future__ import annotations

from clusternet_aa.tunnel.protocol.errors import ErrorCode, FlowControlError

#: Largest credit either side may hold (as HTTP/2).
MAX_WINDOW = 2**31 - 1


class SendCredit:
    """How many bytes we may still send, as granted by the peer."""

    __slots__ = ("available",)

    def __init__(self, initial: int = 0) -> None:
        self.available = initial

    def consume(self, size: int) -> None:
        if size > self.available:
            raise ValueError(f"sending {size} bytes with only {self.available} of credit")
        self.available -= size

    def grant(self, increment: int, *, stream_id: int = 0) -> None:
        """Add credit from a WINDOW_UPDATE; overflowing the maximum is the peer's fault."""
        if self.available + increment > MAX_WINDOW:
            raise FlowControlError(
                f"window update of {increment} overflows the window",
                ErrorCode.FLOW_CONTROL_ERROR,
                stream_id=stream_id,
            )
        self.available += increment


class ReceiveWindow:
    """How many bytes the peer may still send us, and how much credit is owed back."""

    __slots__ = ("_pending_update", "remaining", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.remaining = size
        self._pending_update = 0

    def receive(self, size: int, *, stream_id: int = 0) -> None:
        if size > self.remaining:
            raise FlowControlError(
                f"peer sent {size} bytes with only {self.remaining} of window left",
                stream_id=stream_id,
            )
        self.remaining -= size

    def consumed(self, size: int) -> int:
        """Record ``size`` bytes as consumed; return the WINDOW_UPDATE increment now due (or 0)."""
        if size <= 0:
            return 0
        self._pending_update += size
        if self._pending_update < self.size // 4 and self.remaining > 0:
            return 0
        increment = min(self._pending_update, self.size - self.remaining)
        self._pending_update = 0
        self.remaining += increment
        return increment
