"""The hub's tunnels: which child cluster is reachable through which live session.

One session per cluster id serves new requests. A newer session for the same cluster takes over
once it is alive, and the old one drains (GOAWAY: its streams in flight finish). Requests can
wait a bounded time for a cluster whose agent is reconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import time

from clusternet_aa.proxy.ports import ProxyMetrics
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session

logger = logging.getLogger(__name__)


class TunnelRegistry:
    def __init__(self, metrics: ProxyMetrics | None = None) -> None:
        self._metrics = metrics
        self._sessions: dict[str, Session] = {}
        self._since: dict[Session, float] = {}
        self._arrivals: dict[str, asyncio.Event] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def get(self, cluster_id: str) -> Session | None:
        """The session serving ``cluster_id``, or None when none is live."""
        session = self._sessions.get(cluster_id)
        if session is None or session.is_closed or session.is_draining:
            return None
        return session

    async def wait_for(self, cluster_id: str, patience: float) -> Session | None:
        """The live session for ``cluster_id``, waiting up to ``patience`` s for one to arrive."""
        session = self.get(cluster_id)
        if session is not None:
            return session  # the usual case, without touching the loop (a getpid per call)
        deadline = asyncio.get_running_loop().time() + patience
        while (session := self.get(cluster_id)) is None:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            arrival = self._arrivals.setdefault(cluster_id, asyncio.Event())
            try:
                await asyncio.wait_for(arrival.wait(), remaining)
            except TimeoutError:
                return None
        return session

    def attach(self, cluster_id: str, session: Session) -> None:
        """Make ``session`` (already past HELLO) the one serving ``cluster_id``."""
        old = self._sessions.get(cluster_id)
        self._sessions[cluster_id] = session
        self._since[session] = time.monotonic()
        arrival = self._arrivals.pop(cluster_id, None)
        if arrival is not None:
            arrival.set()
        if self._metrics is not None:
            self._metrics.tunnel_opened(cluster_id)
        if old is not None and old is not session:
            logger.info("cluster %s: a newer tunnel replaces the old one, which drains", cluster_id)
            task = asyncio.ensure_future(
                old.close(ErrorCode.NO_ERROR, "replaced by a newer tunnel")
            )
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    def detach(self, cluster_id: str, session: Session) -> None:
        """Forget ``session`` (it ended); a newer session for the cluster stays."""
        started = self._since.pop(session, None)
        if self._sessions.get(cluster_id) is session:
            del self._sessions[cluster_id]
        if started is not None and self._metrics is not None:
            self._metrics.tunnel_closed(cluster_id, time.monotonic() - started)

    def connected(self) -> list[str]:
        return sorted(cid for cid in self._sessions if self.get(cid) is not None)

    async def close_all(self, grace: float = 10.0) -> None:
        """Drain every tunnel (hub shutdown): agents reconnect to another replica."""
        sessions = list(self._since)
        await asyncio.gather(
            *(s.close(ErrorCode.NO_ERROR, "hub shutting down", grace=grace) for s in sessions),
            return_exceptions=True,
        )
