"""A hub proxy wired to a kubesim child through a real websocket tunnel, for proxy tests.

The hub here has the real proxy routes, tunnel registry, forwarder and agent executor; only
authentication and authorization are test doubles (a token table and a rule table), since
those belong to the API server and have their own tests.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

from clusternet_aa.apiserver.status import StatusError, status_middleware
from clusternet_aa.identity import REQUEST_USER_KEY, UserInfo
from clusternet_aa.proxy import routes
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.proxy.ports import Decision
from clusternet_aa.proxy.tunnels import TunnelRegistry
from clusternet_aa.sandbox.kubesim import types as kubesim_types
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.tunnel import websocket
from clusternet_aa.tunnel.session import Session

CLUSTER_ID = "c0ffee00-0000-4000-8000-000000000001"
KUBECTL = str(Path(sys.executable).parent / "kubectl")

#: Parent users, by bearer token.
PARENT_USERS = {
    "alice-token": UserInfo(name="alice", uid="u-alice", groups=("dev", "system:authenticated")),
    "root-token": UserInfo(name="root", groups=("system:masters", "system:authenticated")),
    "admin-token": UserInfo(name="admin-user", groups=("ops", "system:authenticated")),
    "agent-token": UserInfo(name="system:serviceaccount:clusternet-system:agent", groups=()),
    "other-agent-token": UserInfo(name="system:serviceaccount:clusternet-system:other"),
    "nobody-token": UserInfo(name="nobody"),
}

CHILD_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: clusternet-agent-impersonator}
rules:
- apiGroups: [""]
  resources: [users, groups, serviceaccounts]
  verbs: [impersonate]
- apiGroups: [authentication.k8s.io]
  resources: [uids, userextras/scopes]
  verbs: [impersonate]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: clusternet-agent-impersonator}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: clusternet-agent-impersonator
subjects: [{kind: User, name: clusternet-agent, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules:
- apiGroups: [""]
  resources: [pods, configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: admin-user-is-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: admin-user, apiGroup: rbac.authorization.k8s.io}]
"""


class TableAuthorizer:
    """Allows (user, verb, resource/subresource, name) tuples listed in ``rules``; counts calls."""

    def __init__(self, rules: set[tuple[str, str, str, str]]) -> None:
        self.rules = rules
        self.calls: list[tuple[str, str, str, str]] = []

    async def authorize(
        self, user: UserInfo, *, verb: str, resource: str, subresource: str = "", name: str = ""
    ) -> Decision:
        full = f"{resource}/{subresource}" if subresource else resource
        key = (user.name, verb, full, name)
        self.calls.append(key)
        for rule in self.rules:
            if all(want in ("*", got) for want, got in zip(rule, key, strict=True)):
                return Decision(True)
        return Decision(False, "no rule allows it")


class StaticDirectory:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def is_known(self, cluster_id: str) -> bool | None:
        return cluster_id in self.known


@web.middleware
async def token_authn(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    user = PARENT_USERS.get(header.removeprefix("Bearer ").strip())
    if user is None:
        raise StatusError(401, "Unauthorized")
    request[REQUEST_USER_KEY] = user
    return await handler(request)


@dataclass
class ProxyWorld:
    child: KubesimServer
    hub_url: str
    registry: TunnelRegistry
    authorizer: TableAuthorizer
    directory: StaticDirectory
    state: Path
    client_ssl: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    ca_pem: bytes = b""
    executors: list[Executor] = field(default_factory=list)
    agent_sessions: list[Session] = field(default_factory=list)
    child_ssl: ssl.SSLContext | None = None

    def proxy_url(self, cluster_id: str = CLUSTER_ID) -> str:
        return (
            f"{self.hub_url}/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}/proxy/direct"
        )

    def kubeconfig(self, token: str, cluster_id: str = CLUSTER_ID) -> Path:
        path = self.state / f"{token}-{cluster_id[:8]}.kubeconfig"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": self.proxy_url(cluster_id),
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [
                {"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}
            ],
            "current-context": "c",
        }
        path.write_text(yaml.safe_dump(document))
        return path

    async def kubectl(
        self, token: str, *args: str, stdin: bytes | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        process = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(self.kubeconfig(token)), *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
        finally:
            # A timeout or a cancelled test must not leave kubectl running with open pipes
            # (their transport would be collected after this test's loop is closed).
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode is not None
        return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())

    async def connect_agent(
        self,
        token: str = "agent-token",
        cluster_id: str = CLUSTER_ID,
        **executor_kwargs: Any,
    ) -> Session:
        executor = Executor(
            ChildApiserver(
                url=self.child.url, ssl_context=self.child_ssl, token=lambda: "child-agent-token"
            ),
            **executor_kwargs,
        )
        await executor.__aenter__()
        self.executors.append(executor)
        client = aiohttp.ClientSession()
        base = self.hub_url.replace("https", "wss", 1)
        url = f"{base}/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}"
        try:
            session = await websocket.connect(
                client,
                url,
                ssl_context=self.client_ssl,
                headers={"Authorization": f"Bearer {token}"},
                handler=executor,
            )
        except BaseException:
            await client.close()
            raise
        session_client_closer(session, client)
        self.agent_sessions.append(session)
        await session.wait_ready()
        for _ in range(200):
            if self.registry.get(cluster_id) is not None:
                break
            await asyncio.sleep(0.01)
        return session


def session_client_closer(session: Session, client: aiohttp.ClientSession) -> None:
    async def close_later() -> None:
        await session.wait_closed()
        await client.close()

    task = asyncio.ensure_future(close_later())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()


def _child_tokens() -> Mapping[str, kubesim_types.UserInfo]:
    return {
        "child-agent-token": kubesim_types.UserInfo(
            name="clusternet-agent", groups=("system:authenticated",)
        )
    }


async def start_child(tmp_path: Path) -> KubesimServer:
    """A kubesim child with the agent's RBAC applied by real kubectl (the caller stops it)."""
    child = KubesimServer(KubesimConfig(static_tokens=_child_tokens()))
    await child.start()
    admin = child.write_state(tmp_path / "child")
    rbac = tmp_path / "rbac.yaml"
    rbac.write_text(CHILD_RBAC)
    setup = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(admin), "apply", "-f", str(rbac),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await setup.communicate()
    assert setup.returncode == 0, out + err
    return child


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ProxyWorld]:
    child = await start_child(tmp_path)
    child_ssl = ssl.create_default_context(cadata=child.ca_pem.decode())

    registry = TunnelRegistry()
    authorizer = TableAuthorizer(
        {
            ("system:serviceaccount:clusternet-system:agent", "create", "sockets", CLUSTER_ID),
            ("alice", "*", "sockets/proxy", "*"),
            ("root", "*", "sockets/proxy", "*"),
            ("admin-user", "*", "sockets/proxy", "*"),
        }
    )
    directory = StaticDirectory({CLUSTER_ID})
    app = web.Application(
        middlewares=[status_middleware, token_authn], client_max_size=4 * 1024 * 1024
    )
    routes.add_routes(app, registry=registry, authorizer=authorizer, directory=directory)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state = tmp_path / "kubeconfigs"
    state.mkdir()
    world = ProxyWorld(
        child,
        f"https://127.0.0.1:{port}",
        registry,
        authorizer,
        directory,
        state,
        child_ssl=child_ssl,
        client_ssl=client_ssl,
        ca_pem=ca.cert_pem.bytes(),
    )
    yield world
    for session in world.agent_sessions:
        await session.close(grace=1)
    await registry.close_all(grace=1)
    for executor in world.executors:
        await executor.__aexit__(None, None, None)
    await runner.cleanup()
    await child.stop()


@pytest.fixture
def kubectl_available() -> None:
    if not Path(KUBECTL).exists() and shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
