"""Assembly of the hub's API server: the parts, their wiring, and the aiohttp Application.

:func:`create_hub` builds a :class:`Hub` without starting anything; :meth:`Hub.start` starts the
informers (trust ConfigMap, ManagedClusters) and :meth:`Hub.stop` stops them. The socket routes
(tunnel and proxy) belong to the proxy feature: they are added by the ``extra_routes`` callback,
which receives the Hub so it can take the authorizer, cluster directory, metrics and settings
(the API server does not import the proxy); by default :func:`add_socket_routes`. With the
``SocketConnection`` gate off those paths answer 503 as Clusternet's do.

One middleware, Status rendering around authentication (every error, including
authentication's 401, is a ``metav1.Status``): one layer rather than two on every request.
Paths nobody serves get a 404 Status, never a redirect.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509

from clusternet_aa.apiserver import discovery, router, tls, version
from clusternet_aa.apiserver.authn import Authenticator, TokenReviewer, api_middleware
from clusternet_aa.apiserver.authz import SubjectAccessReviewer
from clusternet_aa.apiserver.clusters import ClusterDirectory
from clusternet_aa.apiserver.health import Health
from clusternet_aa.apiserver.metrics import HubMetrics
from clusternet_aa.apiserver.openapi import OpenAPI
from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.apiserver.trust import Trust, TrustFlags
from clusternet_aa.hub.settings import AuthSettings, HubSettings, SettingsError
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.informers import Informer, ResourceRef
from clusternet_aa.proxy import routes as proxy_routes
from clusternet_aa.proxy.ports import GROUP, VERSION
from clusternet_aa.proxy.tunnels import TunnelRegistry
from clusternet_aa.tunnel.protocol.settings import Settings as TunnelSettings

logger = logging.getLogger(__name__)

SOCKETS_PATH = f"/apis/{GROUP}/{VERSION}/sockets"


class Hub:
    """The hub's API server parts, built and wired; not yet started."""

    def __init__(self, settings: HubSettings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.serving = tls.load_serving_cert(
            settings.tls_cert_file,
            settings.tls_private_key_file,
            names=settings.self_signed_names,
        )
        self._serving_not_after = x509.load_pem_x509_certificate(
            self.serving.cert_pem
        ).not_valid_after_utc
        self.trust = Trust(_trust_flags(settings.auth), on_new_cas=self._add_client_cas)
        self.ssl_context: ssl.SSLContext = tls.server_context(
            self.serving,
            [*self.trust.snapshot.client_cas, *self.trust.snapshot.requestheader_cas],
        )
        auth = settings.auth
        self.tokens = TokenReviewer(
            kube, success_ttl=auth.token_success_ttl, failure_ttl=auth.token_failure_ttl
        )
        self.authenticator = Authenticator(self.trust, self.tokens)
        self.authorizer = SubjectAccessReviewer(
            kube,
            allowed_ttl=auth.authz_allowed_ttl,
            denied_ttl=auth.authz_denied_ttl,
            always_allow_groups=auth.always_allow_groups,
        )
        self.directory = ClusterDirectory(kube)
        self.metrics = HubMetrics()
        self.tunnels = TunnelRegistry(self.metrics)
        self.health = Health()
        self.openapi = OpenAPI()
        self.trust_informer: Informer | None = None
        if self.trust.needs_configmap:
            self.trust_informer = Informer(
                kube,
                ResourceRef("", "v1", "configmaps", auth.configmap_namespace),
                field_selector=f"metadata.name={auth.configmap_name}",
                on_event=self.trust.on_configmap_event,
            )
        self.health.add_readiness("serving-cert", self._serving_cert_check)
        self.health.add_readiness("informer-sync", self._informer_sync_check)

    def _add_client_cas(self, cas: Sequence[x509.Certificate]) -> None:
        context = getattr(self, "ssl_context", None)
        if context is not None:
            tls.add_client_cas(context, cas)

    def _serving_cert_check(self) -> str | None:
        """Ready only while the certificate clients verify us with is within its validity."""
        if datetime.datetime.now(datetime.UTC) >= self._serving_not_after:
            return "the serving certificate has expired"
        return None

    def _informer_sync_check(self) -> str | None:
        informer = self.trust_informer
        if informer is not None and not informer.has_synced:
            return f"authentication ConfigMap not synced: {informer.last_error}"
        return None

    async def start(self) -> None:
        if self.trust_informer is not None:
            self.trust_informer.start()
        self.directory.start()

    async def stop(self) -> None:
        if self.trust_informer is not None:
            await self.trust_informer.stop()
        await self.directory.stop()


#: Adds the socket routes (tunnel, proxy) given the hub's parts.
ExtraRoutes = Callable[[web.Application, Hub], None]


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from exc


def _trust_flags(auth: AuthSettings) -> TrustFlags:
    return TrustFlags(
        client_ca_pem=_read(auth.client_ca_file),
        requestheader_ca_pem=_read(auth.requestheader_client_ca_file),
        allowed_names=auth.requestheader_allowed_names,
        username_headers=auth.requestheader_username_headers,
        group_headers=auth.requestheader_group_headers,
        extra_prefixes=auth.requestheader_extra_headers_prefix,
        uid_headers=auth.requestheader_uid_headers,
    )


async def _socket_connection_disabled(request: web.Request) -> web.StreamResponse:
    raise StatusError(503, "featuregate SocketConnection has not been enabled on the server side")


def add_socket_routes(app: web.Application, hub: Hub) -> None:
    """The proxy feature's routes (agents' tunnels, users' proxy), and GOAWAY to every tunnel
    when the server shuts down so agents reconnect elsewhere instead of seeing a reset."""
    proxy_routes.add_routes(
        app,
        registry=hub.tunnels,
        authorizer=hub.authorizer,
        directory=hub.directory,
        metrics=hub.metrics,
        settings=proxy_routes.ProxySettings(
            tunnel_wait=hub.settings.tunnel_wait_seconds,
            tunnel=TunnelSettings(
                keepalive_interval=hub.settings.tunnel_keepalive_interval,
                keepalive_misses=hub.settings.tunnel_keepalive_misses,
            ),
        ),
    )

    async def drain_tunnels(_: web.Application) -> None:
        await hub.tunnels.close_all(grace=hub.settings.shutdown_grace_seconds)

    app.on_shutdown.append(drain_tunnels)


def build_app(hub: Hub, *, extra_routes: ExtraRoutes | None = None) -> web.Application:
    """The Application: middlewares, the API server's own routes, the socket routes, 404."""
    # Nearly every request is proxied, below SOCKETS_PATH: route those without aiohttp's walk.
    app = router.application(
        SOCKETS_PATH,
        middlewares=[api_middleware(hub.authenticator)],
        handler_args={"max_field_size": 64 * 1024},
    )
    hub.health.add_routes(app)
    hub.metrics.add_routes(app)
    hub.openapi.add_routes(app)
    version.add_routes(app)
    discovery.add_routes(app)
    if not hub.settings.socket_connection:
        app.router.add_route("*", SOCKETS_PATH + "/{tail:.*}", _socket_connection_disabled)
    else:
        (extra_routes or add_socket_routes)(app, hub)
    app.router.add_route("*", "/{tail:.*}", discovery.handle_not_found)
    return app


async def create_hub(settings: HubSettings, kube: KubeClient | None = None) -> Hub:
    """A hub for ``settings``; the parent client from ``settings.kubeconfig`` unless given."""
    settings.validate()
    if kube is None:
        kube = await KubeClient.from_kubeconfig(settings.kubeconfig)
    return Hub(settings, kube)
