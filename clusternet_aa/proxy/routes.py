"""The hub's socket routes: the agents' tunnel endpoint and the users' proxy endpoint.

* ``GET  /apis/proxies.clusternet.io/v1alpha1/sockets/<cluster-id>`` upgrades to the tunnel
  websocket. The caller must be allowed to ``create`` ``sockets`` named ``<cluster-id>`` (kube's
  verb for connect-style upgrades): the agent of cluster A cannot hold cluster B's tunnel.
* ``*    .../sockets/<cluster-id>/proxy/...`` is forwarded (see :mod:`forwarder`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web

from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.proxy import forwarder
from clusternet_aa.proxy.ports import Authorizer, ClusterDirectory, ProxyMetrics
from clusternet_aa.proxy.tunnels import TunnelRegistry
from clusternet_aa.tunnel import websocket
from clusternet_aa.tunnel.protocol.errors import TunnelError
from clusternet_aa.tunnel.protocol.settings import Settings

logger = logging.getLogger(__name__)

#: The verb an agent needs on ``sockets/<its cluster id>`` to hold that cluster's tunnel.
TUNNEL_VERB = "create"


@dataclass(frozen=True, kw_only=True)
class ProxySettings:
    #: Seconds a proxied request waits for a reconnecting agent before the 503.
    tunnel_wait: float = 0.0
    #: Tunnel protocol settings offered to agents.
    tunnel: Settings = field(default_factory=Settings)
    #: Seconds an agent has to complete HELLO after the upgrade.
    hello_timeout: float = 10.0


class TunnelEndpoint:
    def __init__(
        self,
        registry: TunnelRegistry,
        authorizer: Authorizer,
        settings: ProxySettings,
    ) -> None:
        self._registry = registry
        self._authorizer = authorizer
        self._settings = settings

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        user = forwarder.caller(request)
        cluster_id = request.match_info["cluster"]
        forwarder.check_cluster_id(cluster_id)
        await forwarder.authorize(
            self._authorizer, user, verb=TUNNEL_VERB, cluster_id=cluster_id, subresource=""
        )
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise StatusError(
                400, "sockets/<cluster-id> is the agents' tunnel: it needs a websocket upgrade"
            )
        if websocket.offered_subprotocol(request) is None:
            raise StatusError(
                400,
                "no supported tunnel version offered; expected subprotocol "
                + " or ".join(websocket.ACCEPTED_SUBPROTOCOLS),
            )
        ws, session = await websocket.accept(
            request, settings=self._settings.tunnel, name=f"cluster {cluster_id}"
        )
        session.start()
        try:
            await asyncio.wait_for(session.wait_ready(), self._settings.hello_timeout)
        except (TimeoutError, TunnelError) as exc:
            logger.warning("cluster %s: tunnel never became ready: %s", cluster_id, exc)
            await session.close(grace=1)
            return ws
        logger.info("cluster %s: tunnel up (user %s)", cluster_id, user.name)
        self._registry.attach(cluster_id, session)
        try:
            await session.wait_closed()
        finally:
            self._registry.detach(cluster_id, session)
            logger.info(
                "cluster %s: tunnel down: %s %s",
                cluster_id,
                session.close_code.name if session.close_code is not None else "?",
                session.close_reason,
            )
        return ws


def add_routes(
    app: web.Application,
    *,
    registry: TunnelRegistry,
    authorizer: Authorizer,
    directory: ClusterDirectory,
    metrics: ProxyMetrics | None = None,
    settings: ProxySettings | None = None,
) -> None:
    settings = settings or ProxySettings()
    proxy = forwarder.Forwarder(
        registry, authorizer, directory, metrics=metrics, tunnel_wait=settings.tunnel_wait
    )
    prefix = forwarder.SOCKETS_PREFIX.rstrip("/")
    tunnel = TunnelEndpoint(registry, authorizer, settings)
    # Register bound coroutine methods: aiohttp warns about callable objects as handlers.
    # The router tries the resources under one prefix in the order they were added: the
    # proxy's first, as it serves nearly every request (the two paths never both match).
    app.router.add_route("*", prefix + "/{cluster}/proxy{tail:(/.*)?}", proxy.__call__)
    app.router.add_route("GET", prefix + "/{cluster}", tunnel.__call__)
