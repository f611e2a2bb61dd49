"""The agent's tunnel: dial the hub, serve its streams, and come back when the link drops.

The agent dials ``<parent>/apis/proxies.clusternet.io/v1alpha1/sockets/<cluster-id>`` through the
parent's API server (which authenticates and authorizes the agent's ServiceAccount and relays
the upgrade to the hub). When the session ends for any reason it reconnects with capped
exponential backoff and full jitter, so a hub restart with thousands of agents does not become a
thundering herd.

When the hub drains (GOAWAY, e.g. a rolling restart) the client dials a new session at once,
without backoff, while the old one finishes the streams in flight. A refused upgrade with 401
(the parent no longer accepts the agent's token) is reported to ``on_unauthorized`` so the agent
can register again instead of redialing with a dead token.
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
from clusternet_aa.tunnel.protocol.errors import ErrorCode, TunnelError
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.session import Session, StreamHandler

logger = logging.getLogger(__name__)

SOCKETS_PATH = "/apis/proxies.clusternet.io/v1alpha1/sockets/"
#: How often a live session is checked for a GOAWAY from the hub, in seconds.
DRAIN_CHECK_INTERVAL = 0.2
#: A session that ends cleanly (GOAWAY with NO_ERROR) after living this long is redialed at
#: once; a hub that sends GOAWAY right away again gets the backoff, not a tight loop.
MIN_SESSION_FOR_QUICK_REDIAL = 1.0


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Capped exponential backoff with full jitter (sleep a random time up to the cap)."""

    initial: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.maximum, self.initial * self.factor**attempt))


def tunnel_url(parent_url: str, cluster_id: str) -> str:
    """The websocket URL of a cluster's tunnel; a path prefix of the parent URL is kept.

    ``parent_url`` may also be the hub's own URL (``--hub-url``): the hub serves the same path.
    """
    base = parent_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    if base.endswith(SOCKETS_PATH.rstrip("/")):
        base = base[: -len(SOCKETS_PATH.rstrip("/"))]
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
        on_unauthorized: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._handler = handler
        self._token = token
        self._ssl = ssl_context
        self._settings = settings
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._on_unauthorized = on_unauthorized
        self._stopping = asyncio.Event()
        self._draining: set[asyncio.Task[None]] = set()
        self.session: Session | None = None
        self.connected = asyncio.Event()
        self.connects = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Dial, serve, and redial until :meth:`stop`; the last session drains on stop."""
        attempt = 0
        last_error = ""
        async with aiohttp.ClientSession() as client:
            while not self._stopping.is_set():
                try:
                    drained = await self._serve_once(client)
                    attempt, last_error = 0, ""
                    if drained:
                        logger.info("the hub drains the tunnel: dialing a new one at once")
                        continue
                except (TunnelError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    # One warning per distinct failure; repeats of the same one are debug.
                    text = f"{type(exc).__name__}: {exc}"
                    log = logger.debug if text == last_error else logger.warning
                    log("tunnel to %s failed: %s", self._url, exc)
                    last_error = text
                    attempt += 1
                    status = getattr(exc, "status", None)
                    if status == 401 and self._on_unauthorized is not None:
                        self._on_unauthorized()
                if self._stopping.is_set():
                    break
                delay = self._backoff.delay(attempt, self._rng)
                logger.info("reconnecting the tunnel in %.1fs", delay)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass
            if self._draining:
                await asyncio.wait(self._draining)

    async def _serve_once(self, client: aiohttp.ClientSession) -> bool:
        """Serve one session until it ends or the hub sends GOAWAY (the old session then keeps
        draining in the background). True: the hub drained a session that had lived a while,
        so redial at once."""
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
        drained = False
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await session.wait_ready()
            self.connects += 1
            self.connected.set()
            logger.info("tunnel up: %s", self._url)
            stop = asyncio.ensure_future(self._stopping.wait())
            closed = asyncio.ensure_future(session.wait_closed())
            try:
                while not (stop.done() or closed.done()):
                    await asyncio.wait(
                        {stop, closed},
                        timeout=DRAIN_CHECK_INTERVAL,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not (stop.done() or closed.done()) and session.is_draining:
                        drained = True
                        break
            finally:
                stop.cancel()
                closed.cancel()
        finally:
            self.connected.clear()
            self.session = None
            if drained:
                task = asyncio.ensure_future(self._finish(session))
                self._draining.add(task)
                task.add_done_callback(self._draining.discard)
                drained = loop.time() - started >= MIN_SESSION_FOR_QUICK_REDIAL
            else:
                await session.close(grace=10 if self._stopping.is_set() else 1)
                code = session.close_code
                logger.info(
                    "tunnel down: %s %s",
                    code.name if code is not None else "?",
                    session.close_reason,
                )
                # The hub drained and closed between two checks: still a GOAWAY, redial now.
                drained = (
                    code is ErrorCode.NO_ERROR
                    and not self._stopping.is_set()
                    and loop.time() - started >= MIN_SESSION_FOR_QUICK_REDIAL
                )
        return drained

    async def _finish(self, session: Session) -> None:
        """Let a drained session finish its streams in flight, then close it."""
        closed = asyncio.ensure_future(session.wait_closed())
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({closed, stop}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            stop.cancel()
        await session.close(ErrorCode.NO_ERROR, "drained", grace=5)
        code = session.close_code
        logger.info(
            "drained tunnel closed: %s %s",
            code.name if code is not None else "?",
            session.close_reason,
        )
