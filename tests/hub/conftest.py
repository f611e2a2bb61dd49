"""Fixtures for hub tests: kubesim as the parent, hubs on ephemeral ports, a TLS caller."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from clusternet_aa.apiserver.authz import forbidden_message, verb_for_method
from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.hub.app import Hub
from clusternet_aa.hub.server import HubServer
from clusternet_aa.hub.settings import AuthSettings, HubSettings
from clusternet_aa.identity import REQUEST_USER_KEY
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.hub import certs

ECHO_PREFIX = "/apis/proxies.clusternet.io/v1alpha1/sockets"


def echo_routes(app: web.Application, hub: Hub) -> None:
    """Stand-in for the proxy's routes: authorize like it, then echo who and what arrived."""

    async def echo(request: web.Request) -> web.Response:
        user = request[REQUEST_USER_KEY]
        verb = verb_for_method(request.method)
        name = request.match_info["cluster"]
        decision = await hub.authorizer.authorize(
            user, verb=verb, resource="sockets", subresource="proxy", name=name
        )
        if not decision.allowed:
            raise StatusError(
                403,
                forbidden_message(
                    user, verb=verb, resource="sockets", subresource="proxy", name=name
                ),
            )
        return web.json_response(
            {
                "user": user.to_metadata(),
                "headers": [[k, v] for k, v in request.headers.items()],
            }
        )

    app.router.add_route("*", ECHO_PREFIX + "/{cluster}/proxy{tail:.*}", echo)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]
    text: str

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


@dataclass
class PKI:
    front_ca: certs.Pair
    front_client: certs.Pair
    client_ca: certs.Pair
    directory: Path

    def file(self, pair: certs.Pair, name: str) -> Path:
        path = self.directory / f"{name}.pem"
        path.write_bytes(pair.cert_pem)
        return path


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    front_ca = certs.make_ca("test-front-proxy-ca")
    return PKI(
        front_ca=front_ca,
        front_client=certs.issue(front_ca, "front-proxy-client"),
        client_ca=certs.make_ca("test-client-ca"),
        directory=tmp_path,
    )


@pytest.fixture
async def sim() -> AsyncIterator[KubesimServer]:
    async with running_kubesim() as server:
        yield server


@pytest.fixture
def parent_kubeconfig(sim: KubesimServer, tmp_path: Path) -> Path:
    return sim.write_state(tmp_path / "parent")


def flag_settings(pki: PKI, kubeconfig: Path, **auth: Any) -> HubSettings:
    """A hub trusting the test CAs through flags (no ConfigMap needed)."""
    return HubSettings(
        bind_address="127.0.0.1",
        secure_port=0,
        kubeconfig=kubeconfig,
        auth=AuthSettings(
            client_ca_file=pki.file(pki.client_ca, "client-ca"),
            requestheader_client_ca_file=pki.file(pki.front_ca, "front-ca"),
            requestheader_allowed_names=("front-proxy-client",),
            **auth,
        ),
        shutdown_grace_seconds=1.0,
    )


HubFactory = Callable[..., Awaitable[HubServer]]


@pytest.fixture
async def start_hub() -> AsyncIterator[HubFactory]:
    servers: list[HubServer] = []

    async def start(settings: HubSettings, *, echo: bool = True, **kwargs: Any) -> HubServer:
        server = HubServer(settings, extra_routes=echo_routes if echo else None, **kwargs)
        servers.append(server)
        await server.start()
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def hub(start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path) -> HubServer:
    return await start_hub(flag_settings(pki, parent_kubeconfig))


async def grant(
    sim: KubesimServer,
    name: str,
    subjects: list[dict[str, str]],
    verbs: tuple[str, ...] = ("*",),
    resources: tuple[str, ...] = ("sockets/proxy",),
    resource_names: tuple[str, ...] = (),
) -> None:
    """A ClusterRole on proxies.clusternet.io and its binding to ``subjects``, in the parent."""
    from clusternet_aa.kube.client import KubeClient
    from clusternet_aa.sandbox.kubesim.testing import api_client

    rule: dict[str, Any] = {
        "apiGroups": ["proxies.clusternet.io"],
        "resources": list(resources),
        "verbs": list(verbs),
    }
    if resource_names:
        rule["resourceNames"] = list(resource_names)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    async with api_client(sim) as api:
        kube = KubeClient(api)
        await kube.request(
            "POST", f"{rbac}/clusterroles", body={"metadata": {"name": name}, "rules": [rule]}
        )
        await kube.request(
            "POST",
            f"{rbac}/clusterrolebindings",
            body={
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **s} for s in subjects],
            },
        )  # fmt: skip


class Caller:
    """HTTPS requests to a hub with a chosen client certificate, token and headers."""

    def __init__(self, server: HubServer) -> None:
        self.server = server

    def context(self, client: certs.Pair | None = None) -> ssl.SSLContext:
        return certs.client_context(self.server.hub.serving.cert_pem, client)

    async def __call__(
        self,
        path: str,
        *,
        method: str = "GET",
        client: certs.Pair | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    ) -> Reply:
        sent: list[tuple[str, str]] = list(
            headers.items() if isinstance(headers, Mapping) else headers or []
        )
        if token is not None:
            sent.append(("Authorization", f"Bearer {token}"))
        connector = aiohttp.TCPConnector(ssl=self.context(client))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(
                method, self.server.url + path, headers=sent, allow_redirects=False
            ) as response,
        ):
            text = await response.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = None
            return Reply(response.status, body, dict(response.headers), text)


@pytest.fixture
def call(hub: HubServer) -> Caller:
    return Caller(hub)


def with_auth(settings: HubSettings, **changes: Any) -> HubSettings:
    return replace(settings, auth=replace(settings.auth, **changes))
