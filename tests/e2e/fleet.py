"""A whole fleet on 127.0.0.1 for end-to-end tests: kubectl -> kubesim parent (aggregation,
front-proxy mTLS) -> clusternet-hub (a real process) -> tunnel -> agent executor -> kubesim child
(with pods backed by real processes).

Everything is real except the two API servers, which are kubesim. The agent here is the tunnel
client and executor of the agent package driven in-process; its registration lifecycle has its
own tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.sandbox.kubesim import kubeconfig as kubeconfig_files
from clusternet_aa.sandbox.kubesim import pki
from clusternet_aa.sandbox.kubesim import types as kubesim_types
from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client
from tests.hub.test_aggregation import register

BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
CLUSTER_ID = "5e1f0c1e-7c55-4b2e-9d0a-0000000000c1"
OTHER_CLUSTER_ID = "5e1f0c1e-7c55-4b2e-9d0a-0000000000c2"
APISERVICE = "v1alpha1.proxies.clusternet.io"
DEMO_PORT_ANNOTATION = "kubesim.clusternet.io/local-ports"

PARENT_TOKENS = {
    "alice-token": kubesim_types.UserInfo(name="alice", uid="uid-alice", groups=("developers",)),
    "admin-token": kubesim_types.UserInfo(name="admin", groups=("ops",)),
    "root-token": kubesim_types.UserInfo(name="root", groups=("system:masters",)),
    "mallory-token": kubesim_types.UserInfo(name="mallory"),
    "hub-token": kubesim_types.UserInfo(
        name="system:serviceaccount:clusternet-system:clusternet-hub"
    ),
    "agent-token": kubesim_types.UserInfo(name="system:serviceaccount:clusternet-c1:cluster-agent"),
    "agent2-token": kubesim_types.UserInfo(
        name="system:serviceaccount:clusternet-c2:cluster-agent"
    ),
}
CHILD_TOKENS = {
    "child-agent-token": kubesim_types.UserInfo(
        name="system:serviceaccount:clusternet-system:clusternet-agent"
    ),
}

PARENT_RBAC = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: clusternet-hub}}
rules:
- {{apiGroups: [authentication.k8s.io], resources: [tokenreviews], verbs: [create]}}
- {{apiGroups: [authorization.k8s.io], resources: [subjectaccessreviews], verbs: [create]}}
- {{apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}}
- {{apiGroups: [clusters.clusternet.io], resources: [managedclusters], verbs: [get, list, watch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: clusternet-hub}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusternet-hub}}
subjects: [{{kind: User, name: "system:serviceaccount:clusternet-system:clusternet-hub"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: socket-proxy-users}}
rules:
- {{apiGroups: [proxies.clusternet.io], resources: [sockets/proxy], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: socket-proxy-users}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: socket-proxy-users}}
subjects:
- {{kind: User, name: alice}}
- {{kind: User, name: admin}}
- {{kind: User, name: root}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: clusternet-{CLUSTER_ID}}}
rules:
- {{apiGroups: [proxies.clusternet.io], resources: [sockets], resourceNames: ["{CLUSTER_ID}"], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: clusternet-{CLUSTER_ID}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusternet-{CLUSTER_ID}}}
subjects: [{{kind: User, name: "system:serviceaccount:clusternet-c1:cluster-agent"}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: clusternet-{OTHER_CLUSTER_ID}}}
rules:
- {{apiGroups: [proxies.clusternet.io], resources: [sockets], resourceNames: ["{OTHER_CLUSTER_ID}"], verbs: ["*"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: clusternet-{OTHER_CLUSTER_ID}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusternet-{OTHER_CLUSTER_ID}}}
subjects: [{{kind: User, name: "system:serviceaccount:clusternet-c2:cluster-agent"}}]
"""

CHILD_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: clusternet-agent-impersonator}
rules:
- {apiGroups: [""], resources: [users, groups], verbs: [impersonate]}
- {apiGroups: [authentication.k8s.io], resources: [uids, userextras/scopes], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: clusternet-agent-impersonator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: clusternet-agent-impersonator}
subjects: [{kind: User, name: "system:serviceaccount:clusternet-system:clusternet-agent"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: developer, namespace: default}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [pods/exec, pods/portforward], verbs: [get, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-developer, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: developer}
subjects: [{kind: User, name: alice}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: admin-is-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: admin}]
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def run(
    *argv: str, stdin: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(argv), process.returncode, out, err)


@dataclass
class Fleet:
    parent: KubesimServer
    child: KubesimServer
    state: Path
    hub_process: asyncio.subprocess.Process
    hub_port: int
    agent: TunnelClient
    executor: Executor
    http_port: int
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def proxy_server(self, cluster_id: str = CLUSTER_ID) -> str:
        return f"{self.parent.url}/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}/proxy/direct"

    def kubeconfig(self, token: str, cluster_id: str = CLUSTER_ID) -> Path:
        path = self.state / f"{token}-{cluster_id[-2:]}.kubeconfig"
        if not path.exists():
            document = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "child",
                        "cluster": {
                            "server": self.proxy_server(cluster_id),
                            "certificate-authority-data": base64.b64encode(
                                self.parent.ca_pem
                            ).decode(),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "child",
                        "context": {"cluster": "child", "user": "u", "namespace": "default"},
                    }
                ],
                "current-context": "child",
            }
            path.write_text(yaml.safe_dump(document))
        return path

    async def kubectl(
        self,
        token: str,
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        kubectl: str = KUBECTL,
    ) -> subprocess.CompletedProcess[bytes]:
        return await run(
            kubectl,
            "--kubeconfig",
            str(self.kubeconfig(token)),
            *args,
            stdin=stdin,
            timeout=timeout,
            env=env,
        )

    def parent_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.parent.ca_pem.decode())


async def _apply(server: KubesimServer, state: Path, name: str, manifest: str) -> None:
    admin = server.write_state(state / name)
    path = state / f"{name}.yaml"
    path.write_text(manifest)
    result = await run(KUBECTL, "--kubeconfig", str(admin), "apply", "-f", str(path))
    assert result.returncode == 0, result.stderr.decode()


async def _register_hub(parent: KubesimServer, port: int, ca_pem: bytes) -> None:
    async with api_client(parent) as api:
        await register(KubeClient(api), port, ca_pem)


async def _demo_http_server(cluster: str) -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                reply = (
                    b"hello from "
                    + cluster.encode()
                    + b" ("
                    + str(len(body)).encode()
                    + b" bytes received)\n"
                )
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@contextlib.asynccontextmanager
async def running_fleet(state: Path) -> AsyncIterator[Fleet]:
    state.mkdir(parents=True, exist_ok=True)
    parent = KubesimServer(
        KubesimConfig(static_tokens=PARENT_TOKENS, apiservice_resync_seconds=0.5)
    )
    child = KubesimServer(
        KubesimConfig(
            static_tokens=CHILD_TOKENS,
            pod_runtime=PodRuntimeConfig(workdir=state / "pods", restart_delay=0.2),
        )
    )
    await parent.start()
    await child.start()
    http_server, http_port = await _demo_http_server("child-1")
    hub_process: asyncio.subprocess.Process | None = None
    stack = contextlib.AsyncExitStack()
    try:
        await _apply(parent, state, "parent", PARENT_RBAC)
        await _apply(child, state, "child", CHILD_RBAC)
        # The hub: its own serving CA (the APIService's caBundle), a kubeconfig for the parent.
        hub_ca = pki.make_ca("clusternet-hub-ca")
        hub_cert = pki.issue_server_cert(
            hub_ca, ["127.0.0.1", "clusternet-hub.clusternet-system.svc"]
        )
        (state / "hub.crt").write_bytes(hub_cert.cert_pem)
        (state / "hub.key").write_bytes(hub_cert.key_pem)
        hub_kubeconfig = kubeconfig_files.write(
            state / "hub.kubeconfig", parent.kubeconfig(token="hub-token")
        )
        hub_port = free_port()
        hub_process = await asyncio.create_subprocess_exec(
            str(BIN / "clusternet-hub"),
            "--bind-address", "127.0.0.1", "--secure-port", str(hub_port),
            "--tls-cert-file", str(state / "hub.crt"), "--tls-private-key-file", str(state / "hub.key"),
            "--kubeconfig", str(hub_kubeconfig), "--shutdown-delay-duration", "0", "-v", "4",
            stdout=open(state / "hub.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )  # fmt: skip
        await _register_hub(parent, hub_port, hub_ca.cert_pem)
        await parent.aggregation.wait_available(APISERVICE, within=30)
        # A running demo pod in the child, its port 8080 mapped to the local HTTP server.
        demo = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "demo",
                "namespace": "default",
                "annotations": {DEMO_PORT_ANNOTATION: f'{{"8080": {http_port}}}'},
            },
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": [
                            "sh",
                            "-c",
                            'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done',
                        ],
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            },
        }
        async with api_client(child) as api:
            await KubeClient(api).request("POST", "/api/v1/namespaces/default/pods", body=demo)
        await child.settle()
        await child.pods.settle()
        executor = Executor(
            ChildApiserver(
                url=child.url,
                ssl_context=ssl.create_default_context(cadata=child.ca_pem.decode()),
                token=lambda: "child-agent-token",
            )
        )
        await stack.enter_async_context(executor)
        agent = TunnelClient(
            tunnel_url(parent.url, CLUSTER_ID),
            executor,
            token=lambda: "agent-token",
            ssl_context=ssl.create_default_context(cadata=parent.ca_pem.decode()),
            backoff=Backoff(initial=0.1, maximum=1.0),
        )
        fleet = Fleet(parent, child, state, hub_process, hub_port, agent, executor, http_port)
        fleet.tasks.append(asyncio.ensure_future(agent.run()))
        await asyncio.wait_for(agent.connected.wait(), 20)
        yield fleet
        agent.stop()
        await asyncio.wait(fleet.tasks, timeout=15)
    finally:
        await stack.aclose()
        if hub_process is not None and hub_process.returncode is None:
            hub_process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(hub_process.wait(), 15)
            except TimeoutError:
                hub_process.kill()
                await hub_process.wait()
        http_server.close()
        await child.stop()
        await parent.stop()


async def get_json(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        return response.status, await response.json(content_type=None)
