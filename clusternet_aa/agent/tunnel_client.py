"""The agent's tunnel: dial the hub, serve its streams, and come back when the link drops.

The agent dials ``<parent>/apis/proxies.clusternet.io/v1alpha1/sockets/<cluster-id>`` through the
parent's API server (which authenticates and authorizes the agent's ServiceAccount and relays
the upgrade to the hub). When the session ends for any reason it reconnects with capped
exponential backoff and full jitter, so a hub restart with thousands of agents does not become a
thundering herd.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from clusternet_aa.tunnel import websocket
from clusternet_aa.tunnel.protocol.errors import TunnelError
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.session import Session, StreamHandler

logger = logging.getLogger(__name__)

SOCKETS_PATH = "/apis/proxies.clusternet.io/v1alpha1/sockets/"


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with full jitter (sleep a random time up to the cap)."""

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.maximum, self.initial * self.factor**attempt))


def tunnel_url(parent_url: str, cluster_id: str) -> str:
    """The websocket URL of a cluster's tunnel; a path prefix of the parent URL is kept."""
    base = parent_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return base + SOCKETS_PATH + cluster_id


class TunnelClient:
    """Keeps one tunnel up. ``token`` is read at every dial, so rotated tokens are picked up."""

    def __init__(
        self,
        url: str,
        handler: StreamHandler,
        *,
        token: Callable[[], str | None],
        ssl_context: ssl.SSLContext | bool = True,
        settings: Settings | None = None,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._url = url
        self._handler = handler
        self._token = token
        self._ssl = ssl_context
        self._settings = settings
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self.session: Session | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Dial, serve, and redial until :meth:`stop`; the last session drains on stop."""
        attempt = 0
        async with aiohttp.ClientSession() as client:
            while not self._stopping.is_set():
                try:
                    await self._serve_once(client)
                    attempt = 0
                except (TunnelError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    logger.warning("tunnel to %s failed: %s", self._url, exc)
                    attempt += 1
                if self._stopping.is_set():
                    break
                delay = self._backoff.delay(attempt, self._rng)
                logger.info("reconnecting the tunnel in %.1fs", delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass

    async def _serve_once(self, client: aiohttp.ClientSession) -> None:
        token = self._token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        session = await websocket.connect(
            client,
            self._url,
            ssl_context=self._ssl,
            headers=headers,
            settings=self._settings,
            handler=self._handler,
            name="agent",
        )
        self.session = session
        try:
            await session.wait_ready()
            self.connects += 1
            self.connected.set()
            logger.info("tunnel up: %s", self._url)
            stop = asyncio.ensure_future(self._stopping.wait())
            closed = asyncio.ensure_future(session.wait_closed())
            await asyncio.wait({stop, closed}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            closed.cancel()
        finally:
            self.connected.clear()
            await session.close(grace=10 if self._stopping.is_set() else 1)
            self.session = None
            logger.info("tunnel down: %s %s", session.close_code, session.close_reason)
