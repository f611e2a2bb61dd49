"""Running the hub: the TLS listener, the informers, and a drain-then-stop shutdown.

The listener offers HTTP/2 and HTTP/1.1 by ALPN (``--http2``, on by default): HTTP/2
connections are served by :mod:`clusternet_aa.apiserver.http2`, everything else by aiohttp's own
connection handler, both with the one application. That is why the listening socket is made
here with ``loop.create_server`` rather than by aiohttp's ``TCPSite``.

On SIGTERM (or SIGINT) the hub first turns ``/readyz`` false, waits
``shutdown_delay_seconds`` so that the kubelet and load balancers notice, then closes the
listener, sends GOAWAY on every HTTP/2 connection, and gives in-flight requests
``shutdown_grace_seconds`` before cancelling them (aiohttp's ``on_shutdown`` hooks run first,
which is where tunnels say GOAWAY).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from clusternet_aa.apiserver import tls
from clusternet_aa.apiserver.http2 import Http2Listener
from clusternet_aa.hub.app import ExtraRoutes, Hub, build_app, create_hub
from clusternet_aa.hub.settings import HubSettings
from clusternet_aa.kube.client import KubeClient

logger = logging.getLogger(__name__)


class HubServer:
    """One hub listening on its port: ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        settings: HubSettings,
        *,
        kube: KubeClient | None = None,
        extra_routes: ExtraRoutes | None = None,
    ) -> None:
        self.settings = settings
        self._kube = kube
        self._owns_kube = kube is None
        self._extra_routes = extra_routes
        self._hub: Hub | None = None
        self._runner: web.AppRunner | None = None
        self._listener: Http2Listener | None = None
        self._server: asyncio.Server | None = None
        self._port = 0

    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise RuntimeError("the hub server is not started")
        return self._hub

    @property
    def listener(self) -> Http2Listener:
        """The listener's protocol factory (HTTP/2 connections and counters)."""
        if self._listener is None:
            raise RuntimeError("the hub server is not started")
        return self._listener

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.settings.bind_address
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"https://{host}:{self._port}"

    async def start(self) -> None:
        hub = await create_hub(self.settings, self._kube)
        self._hub = hub
        app = build_app(hub, extra_routes=self._extra_routes)
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            access_log=logger if logger.isEnabledFor(logging.DEBUG) else None,
            shutdown_timeout=self.settings.shutdown_grace_seconds,
        )
        await runner.setup()
        self._runner = runner
        assert runner.server is not None
        tls.offer_alpn(hub.ssl_context, http2=self.settings.http2)
        self._listener = Http2Listener(runner.server, enabled=self.settings.http2)
        hub.metrics.watch_listener(self._listener)
        self._server = await asyncio.get_running_loop().create_server(
            self._listener,
            self.settings.bind_address or None,
            self.settings.secure_port,
            ssl=hub.ssl_context,
            reuse_address=True,
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        await hub.start()
        logger.info("clusternet-hub serving on %s", self.url)

    async def stop(self) -> None:
        """Drain: not ready, wait the delay, close the listener, let requests finish."""
        hub = self._hub
        if hub is not None:
            hub.health.shutting_down = True
            if self.settings.shutdown_delay_seconds > 0:
                await asyncio.sleep(self.settings.shutdown_delay_seconds)
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._runner is not None:
            listener = self._listener
            if listener is None:
                await self._runner.cleanup()
            else:
                # HTTP/2 connections get GOAWAY and the same grace as HTTP/1.1 requests; the
                # runner drains HTTP/1.1 connections and the tunnels meanwhile.
                await asyncio.gather(
                    listener.shutdown(self.settings.shutdown_grace_seconds),
                    self._runner.cleanup(),
                )
            self._runner = None
        if hub is not None:
            await hub.stop()
            if self._owns_kube:
                await hub.kube.close()
            self._hub = None

    async def __aenter__(self) -> HubServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


async def run(settings: HubSettings, *, extra_routes: ExtraRoutes | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = HubServer(settings, extra_routes=extra_routes)
    try:
        await server.start()
        await stop.wait()
        logger.info("clusternet-hub: shutting down")
    finally:
        await server.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
