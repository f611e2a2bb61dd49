"""One kubesim instance: the aiohttp app, its TLS listener, and the request pipeline.

A request goes through the same filters as in kube-apiserver, in the same order:
request info -> authentication -> impersonation -> authorization -> handler. Non-resource paths
(discovery, /version, /healthz, OpenAPI) and resource paths (REST, watch, subresources) are then
served by their own modules. Everything an instance owns hangs off its :class:`KubesimServer`,
so several instances run in one process (a parent and its child clusters in one test).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from clusternet_aa.sandbox.kubesim import (
    discovery,
    impersonation,
    kubeconfig,
    negotiation,
    requestinfo,
    seed,
)
from clusternet_aa.sandbox.kubesim.aggregation import Aggregation
from clusternet_aa.sandbox.kubesim.authn import Authenticator
from clusternet_aa.sandbox.kubesim.controllers import Controllers
from clusternet_aa.sandbox.kubesim.crds import CrdManager
from clusternet_aa.sandbox.kubesim.objects import ObjectService
from clusternet_aa.sandbox.kubesim.pki import DEFAULT_SERVER_NAMES, KeyPair, Pki
from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig, wire_pods
from clusternet_aa.sandbox.kubesim.rbac import RBACAuthorizer
from clusternet_aa.sandbox.kubesim.registry import CustomResource, Registry
from clusternet_aa.sandbox.kubesim.rest import Call, RestHandlers, json_response
from clusternet_aa.sandbox.kubesim.store import DEFAULT_HISTORY, Store
from clusternet_aa.sandbox.kubesim.subresources import GenericSubresources
from clusternet_aa.sandbox.kubesim.tokens import TokenSigner
from clusternet_aa.sandbox.kubesim.types import (
    KubesimError,
    Obj,
    RequestAttributes,
    UserInfo,
)
from clusternet_aa.sandbox.kubesim.watching import WatchHandler, WatchSettings
from clusternet_aa.sandbox.kubesim.wiring import wire_auth, wire_openapi, wire_patching

logger = logging.getLogger(__name__)

ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)

#: A handler for a non-resource path: (request, the authenticated user) -> response.
NonResourceHandler = Callable[[web.Request, UserInfo], Awaitable[web.StreamResponse]]
#: Sees every authorized request before routing (the aggregation layer); None passes it on.
Interceptor = Callable[
    [web.Request, requestinfo.RequestInfo, UserInfo], Awaitable[web.StreamResponse | None]
]


@dataclass(frozen=True, kw_only=True)
class KubesimConfig:
    """How to run one instance; every field has a default fit for tests."""

    #: Address the HTTPS (and HTTP) listeners bind to.
    host: str = "127.0.0.1"
    #: HTTPS port; 0 picks a free one.
    port: int = 0
    #: Plain HTTP port, or None for no HTTP listener (0 picks a free one).
    http_port: int | None = None
    #: What ``/version`` reports.
    git_version: str = "v1.37.0"
    #: Where to write ``admin.kubeconfig`` and the CA files, if anywhere.
    state_dir: Path | None = None
    #: Serve requests without credentials as ``system:anonymous`` (kube's default).
    allow_anonymous: bool = True
    #: The admin bearer token; random when empty.
    admin_token: str = ""
    #: More static bearer tokens (kube's ``--token-auth-file``).
    static_tokens: Mapping[str, UserInfo] = field(default_factory=dict)
    #: Simulated nodes to register at start.
    nodes: int = 2
    #: Extra DNS names or IPs for the serving certificate.
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES
    #: Events kept for watch resumption; older resourceVersions get 410.
    history: int = DEFAULT_HISTORY
    watch: WatchSettings = field(default_factory=WatchSettings)
    #: The ServiceAccount token issuer.
    issuer: str = "https://kubernetes.default.svc.cluster.local"
    #: Run pods as local processes (exec, attach, port-forward, logs); None: pods stay Pending.
    pod_runtime: PodRuntimeConfig | None = None
    #: How often APIService availability is re-checked besides on changes (kube: 30 s).
    apiservice_resync_seconds: float = 30.0
    #: Budget of one availability probe of an extension server (kube: 5 s).
    apiservice_probe_timeout: float = 5.0


class KubesimServer:
    """A simulated kube-apiserver. ``await start()``, use, ``await stop()``."""

    def __init__(self, config: KubesimConfig | None = None, *, pki: Pki | None = None) -> None:
        self.config = config or KubesimConfig()
        names = list(self.config.server_names)
        if self.config.host not in names and self.config.host not in ("0.0.0.0", "::"):
            names.append(self.config.host)
        self.pki = pki or Pki.generate(names)
        self.admin_token = self.config.admin_token or secrets.token_hex(24)
        self.admin_cert: KeyPair = self.pki.issue_client_cert(ADMIN_USER, ADMIN_GROUPS)
        self.store = Store(history=self.config.history)
        self.registry = Registry()
        self.service = ObjectService(self.store, self.registry)
        self.rest = RestHandlers(self.service, self.registry)
        self.generic_subresources = GenericSubresources(self.rest)
        for info in self.registry.builtins():
            self.generic_subresources.install(info.group, info.resource, info.subresources)
        self.rest.watch = WatchHandler(self.rest, self.config.watch)
        self.crds = CrdManager(self.service, self.registry)
        self.crds.listeners.append(self._on_custom_resource)
        self.controllers = Controllers(self.service, self.registry, self.crds)
        #: Non-resource paths served besides discovery (OpenAPI, later: aggregation, metrics).
        self.non_resource: dict[str, NonResourceHandler] = {}
        self.non_resource_prefixes: dict[str, NonResourceHandler] = {}
        self.interceptors: list[Interceptor] = []
        self.signer = TokenSigner(issuer=self.config.issuer)
        tokens = dict(self.config.static_tokens)
        tokens[self.admin_token] = UserInfo(name=ADMIN_USER, uid="admin", groups=ADMIN_GROUPS)
        self.authenticator = Authenticator(
            lister=self.lister,
            signer=self.signer,
            static_tokens=tokens,
            allow_anonymous=self.config.allow_anonymous,
        )
        self.authorizer = RBACAuthorizer(self.lister)
        wire_auth(self)
        wire_patching(self)
        wire_openapi(self)
        self.pods = wire_pods(self)
        self.aggregation = Aggregation(self)
        self._runner: web.AppRunner | None = None
        self._ports: dict[str, int] = {}

    # -- wiring helpers ------------------------------------------------------------------

    def lister(self, group: str, resource: str, namespace: str | None) -> list[Obj]:
        """The :data:`ObjectLister` other modules read stored objects through."""
        items, _ = self.store.list_objects((group, resource), namespace)
        return items

    def _on_custom_resource(self, custom: CustomResource, serving: bool) -> None:
        for info in custom.infos:
            if serving:
                self.generic_subresources.install(info.group, info.resource, info.subresources)
            else:
                self.generic_subresources.uninstall(info.group, info.resource)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._ports["https"]

    @property
    def url(self) -> str:
        return f"https://{_url_host(self.config.host)}:{self.port}"

    @property
    def http_url(self) -> str | None:
        port = self._ports.get("http")
        return None if port is None else f"http://{_url_host(self.config.host)}:{port}"

    @property
    def ca_pem(self) -> bytes:
        return self.pki.ca.cert_pem

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def start(self) -> None:
        seed.seed(self)
        self.controllers.start()
        self.aggregation.start()
        self._runner = web.AppRunner(
            self.make_app(), handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        tls_socket = _bind(self.config.host, self.config.port)
        self._ports["https"] = tls_socket.getsockname()[1]
        await web.SockSite(self._runner, tls_socket, ssl_context=self.ssl_context()).start()
        if self.config.http_port is not None:
            http_socket = _bind(self.config.host, self.config.http_port)
            self._ports["http"] = http_socket.getsockname()[1]
            await web.SockSite(self._runner, http_socket).start()
        if self.config.state_dir is not None:
            self.write_state(self.config.state_dir)
        await self.controllers.settle()

    async def stop(self) -> None:
        self.store.close_all_watchers()
        await self.controllers.stop()
        await self.pods.stop()
        await self.aggregation.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubesimServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def settle(self) -> None:
        """Wait until background controllers (GC, namespaces, CRDs, tokens) are idle."""
        await self.controllers.settle()

    def ssl_context(self) -> ssl.SSLContext:
        return self.pki.server_ssl_context()

    # -- client material -----------------------------------------------------------------

    def kubeconfig(
        self,
        *,
        token: str | None = None,
        client: KeyPair | None = None,
        user: str = ADMIN_USER,
        namespace: str = "default",
    ) -> Obj:
        """A kubeconfig for this server: the admin token unless a credential is given."""
        if token is None and client is None:
            token = self.admin_token
        return kubeconfig.build(
            server=self.url,
            ca_pem=self.ca_pem,
            user=user,
            token=token,
            client=client,
            namespace=namespace,
        )

    def write_state(self, directory: Path) -> Path:
        """Write CA files and ``admin.kubeconfig`` (token) and ``admin-cert.kubeconfig``."""
        self.pki.write(directory)
        kubeconfig.write(
            directory / "admin-cert.kubeconfig", self.kubeconfig(client=self.admin_cert)
        )
        (directory / "admin.token").write_text(self.admin_token)
        (directory / "admin.token").chmod(0o600)
        return kubeconfig.write(directory / "admin.kubeconfig", self.kubeconfig())

    # -- the pipeline --------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except KubesimError as e:
            return json_response(None, e.to_status(), status=e.code)
        except web.HTTPRequestEntityTooLarge:
            error = KubesimError(413, "RequestEntityTooLarge", "Request entity too large")
            return json_response(None, error.to_status(), status=413)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:
            logger.exception("kubesim: internal error on %s %s", request.method, request.path)
            error = KubesimError(500, "InternalError", f"Internal error occurred: {e!r}")
            return json_response(None, error.to_status(), status=500)

    def _peer_cert(self, request: web.Request) -> bytes | None:
        transport = request.transport
        if transport is None:
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        der: bytes | None = ssl_object.getpeercert(binary_form=True)
        return der

    def authenticate(self, request: web.Request) -> UserInfo:
        """authenticate, then impersonate: the identity the request acts as."""
        user = self.authenticator.authenticate(
            authorization=request.headers.get("Authorization"),
            peer_cert_der=self._peer_cert(request),
        )
        headers = list(request.headers.items())
        if impersonation.has_impersonation(headers):
            user = impersonation.impersonate(user, headers, self.authorizer)
        return user

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        info = requestinfo.parse(request.method, path, request.query)
        user = self.authenticate(request)
        attrs = RequestAttributes(
            user=user,
            verb=info.verb,
            is_resource_request=info.is_resource_request,
            path=path,
            api_group=info.api_group,
            api_version=info.api_version,
            resource=info.resource,
            subresource=info.subresource,
            namespace=info.namespace,
            name=info.name,
        )
        decision = self.authorizer(attrs)
        if not decision.allowed:
            raise impersonation.forbidden(attrs, decision.reason)
        for intercept in self.interceptors:
            intercepted = await intercept(request, info, user)
            if intercepted is not None:
                return intercepted
        if not info.is_resource_request:
            return await self._non_resource(request, user)
        resource = self.registry.lookup(info.api_group, info.api_version, info.resource)
        if resource is None or (
            info.namespace and not resource.namespaced and info.resource != "namespaces"
        ):
            raise KubesimError(404, "NotFound", "the server could not find the requested resource")
        if resource.namespaced and not info.namespace and info.verb not in ("list", "watch"):
            raise KubesimError(404, "NotFound", "the server could not find the requested resource")
        call = Call(request=request, info=info, resource=resource, user=user)
        return await self.rest.handle(call)

    async def _non_resource(self, request: web.Request, user: UserInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method not in ("GET", "HEAD"):
            handler = self.non_resource.get(path)
            if handler is not None:
                return await handler(request, user)
            raise KubesimError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        accept = request.headers.get("Accept", "")
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return json_response(None, discovery.version_info(self.config.git_version))
        if path in ("/api", "/apis"):
            if negotiation.wants_aggregated_discovery(accept):
                body = discovery.aggregated(self.registry, legacy=path == "/api")
                return json_response(None, body, content_type=negotiation.AGGREGATED_V2)
            if path == "/api":
                return json_response(None, discovery.api_versions(request.host))
            return json_response(None, discovery.api_group_list(self.registry))
        parts = path.strip("/").split("/")
        found: Obj | None = None
        if parts[0] == "api" and len(parts) == 2:
            found = discovery.api_resource_list(self.registry, "", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            found = discovery.api_group(self.registry, parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            found = discovery.api_resource_list(self.registry, parts[1], parts[2])
        if found is not None:
            return json_response(None, found)
        handler = self.non_resource.get(path)
        if handler is None:
            for prefix, candidate in self.non_resource_prefixes.items():
                if path.startswith(prefix):
                    handler = candidate
                    break
        if handler is not None:
            return await handler(request, user)
        raise KubesimError(404, "NotFound", "the server could not find the requested resource")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
