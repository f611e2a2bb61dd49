"""Agent side of raw byte streams: dial the target the hub asked for, if it is allowed.

Upstream Clusternet's agent dials whatever the hub names; we only dial targets on an allow-list
(the child's API server, plus what the operator adds), so a compromised hub cannot use the
agent to reach arbitrary hosts in the child's network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from clusternet_aa.tunnel import relay
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import TunnelStream

logger = logging.getLogger(__name__)

#: Decides whether a dial target may be reached.
DialPolicy = Callable[[frames.DialTarget], bool]


def allow_addresses(addresses: Collection[str]) -> DialPolicy:
    """A policy that allows exactly these ``host:port`` TCP addresses."""
    allowed = frozenset(addresses)
    return lambda target: target.network == "tcp" and target.address in allowed


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; ValueError when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {address!r}")
    return host.strip("[]"), int(port)


class Dialer:
    """A tunnel stream handler for DialTarget streams."""

    def __init__(self, policy: DialPolicy, *, connect_timeout: float = 10.0) -> None:
        self._policy = policy
        self._connect_timeout = connect_timeout

    async def __call__(self, stream: TunnelStream) -> None:
        target = stream.target
        if not isinstance(target, frames.DialTarget):
            stream.reset(ErrorCode.REFUSED_STREAM, "this handler only dials")
            return
        if not self._policy(target):
            logger.warning("refused dial to %s/%s", target.network, target.address)
            stream.reset(ErrorCode.FORBIDDEN, f"dialing {target.address} is not allowed")
            return
        try:
            host, port = split_address(target.address)
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, ValueError, TimeoutError) as exc:
            stream.reset(ErrorCode.DIAL_FAILED, f"dial {target.address}: {exc}"[:200])
            return
        stream.send_headers(200)
        await relay.relay(stream, reader, writer)
