"""The assembly the reliability tests share: a kubesim parent (TokenReview, RBAC, CRDs), a real
hub process, lightweight agent processes, a backend process and optionally a kubesim child with
running pods. Everything listens on 127.0.0.1; every process is killed by its PID on the way out.

Clients talk to the hub directly (bearer tokens the hub reviews with the parent), not through
the parent's aggregation layer: the layer under test is the hub and the tunnel, and it keeps
the test process (which hosts the kubesim servers) off the data path.

Agents are authorized with real RBAC in the parent: the ``fleet-agent`` identity may ``create``
``sockets`` of any name (one ClusterRole without resourceNames), so a thousand cluster ids need
one binding; the hub asks the parent with SubjectAccessReview as in production.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim import kubeconfig as kubeconfig_files
from clusternet_aa.sandbox.kubesim import pki
from clusternet_aa.sandbox.kubesim import types as kubesim_types
from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client
from tests.e2e import fleet

PY = sys.executable
KUBECTL = fleet.KUBECTL
ROOT = Path(__file__).resolve().parents[2]
SOCKETS = "/apis/proxies.clusternet.io/v1alpha1/sockets"
AGENT_TOKEN = "fleet-agent-token"
ADMIN_TOKEN = "admin-token"

PARENT_TOKENS = {
    **fleet.PARENT_TOKENS,
    AGENT_TOKEN: kubesim_types.UserInfo(name="system:serviceaccount:fleet:fleet-agent"),
}

AGENT_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: fleet-agents}
rules:
- {apiGroups: [proxies.clusternet.io], resources: [sockets], verbs: [get, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: fleet-agents}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: fleet-agents}
subjects: [{kind: User, name: "system:serviceaccount:fleet:fleet-agent"}]
"""


logger = logging.getLogger("tests.reliability")


def report(test: str, **figures: Any) -> None:
    """Record measured figures: logged, and appended as a JSON line to the file named by
    ``CLUSTERNET_RELIABILITY_REPORT`` when set (the closing figures come from there)."""
    entry = {"test": test, "scale": scale(), **figures}
    logger.info("figures: %s", json.dumps(entry))
    target = os.environ.get("CLUSTERNET_RELIABILITY_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(entry) + "\n")


def scale() -> str:
    """``CLUSTERNET_SCALE``: ``small`` (default, the normal suite) or ``full`` (the figures)."""
    value = os.environ.get("CLUSTERNET_SCALE", "small").strip().lower()
    return "full" if value in ("full", "1", "large") else "small"


def scaled(full: int, small: int) -> int:
    return full if scale() == "full" else small


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_to_port(pid: int, port: int) -> int:
    """How many of the process's sockets are TCP connections to 127.0.0.1:``port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
            count += 1
    return count


def parse_metrics(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float, every: float = 0.05
) -> float:
    """Wait until ``check()``; return the seconds it took, or fail after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        try:
            if await check():
                return loop.time() - start
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        if loop.time() - start > within:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(every)


class Proc:
    """A child process we own; ``stop()`` kills it by PID (SIGKILL after a SIGTERM grace)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.pid, signal.SIGCONT)  # a frozen process must be able to die
            os.kill(self.pid, signal.SIGKILL)
            self.process.wait()

    async def stop(self, grace: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGCONT)
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.kill()


async def wait_port_file(path: Path, proc: Proc, within: float = 20) -> int:
    deadline = time.monotonic() + within
    while not path.exists():
        if not proc.alive:
            raise AssertionError(f"{proc.argv[:4]} exited: {proc.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        await asyncio.sleep(0.05)
    return int(path.read_text())


@dataclass
class Hub:
    world: World
    port: int
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> Hub:
        w = self.world
        argv = [
            PY, "-m", "tests.reliability.procs", "hub",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={w.state / 'hub.crt'}",
            f"--tls-private-key-file={w.state / 'hub.key'}",
            f"--kubeconfig={w.state / 'hub.kubeconfig'}",
            "--shutdown-delay-duration=0",
            f"--tunnel-keepalive-interval={w.keepalive_interval}",
            f"--tunnel-keepalive-misses={w.keepalive_misses}",
        ]  # fmt: skip
        self.proc = Proc(argv, w.state / "hub.log").start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, within: float = 30) -> None:
        async def ready() -> bool:
            assert self.proc is not None
            if not self.proc.alive:
                raise AssertionError(f"hub exited: {self.proc.log.read_text()[-3000:]}")
            async with self.world.http.get(f"{self.url}/readyz") as response:
                return response.status == 200

        await eventually(ready, within=within, every=0.1)

    async def metrics(self) -> dict[str, float]:
        async with self.world.http.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return parse_metrics(await response.text())

    async def tunnels(self) -> float:
        return (await self.metrics())["clusternet_socket_connections_count"]

    async def open_streams_gauge(self) -> float:
        values = await self.metrics()
        return sum(v for k, v in values.items() if k.startswith("clusternet_socket_streams{"))

    async def debug(self, **query: str) -> dict[str, Any]:
        async with self.world.http.get(
            f"{self.url}/debug/reliability", headers=self.world.auth(ADMIN_TOKEN), params=query
        ) as response:
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def fds(self) -> int:
        return fd_count(self.pid)

    def parent_pool(self) -> int:
        """Keep-alive connections of the hub's client pool to the parent (TokenReview, SAR)."""
        return fds_to_port(self.pid, int(self.world.parent.url.rsplit(":", 1)[1]))


@dataclass
class Agents:
    """One helper process holding the tunnels of ``ids``."""

    world: World
    name: str
    proc: Proc
    port: int
    events_path: Path

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        text = self.events_path.read_text()
        # Only whole lines: the helper may be half way through writing the last one.
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line]

    async def stats(self) -> dict[str, Any]:
        async with self.world.http.get(f"http://127.0.0.1:{self.port}/stats") as response:
            result: dict[str, Any] = await response.json()
            return result


@dataclass
class World:
    state: Path
    parent: KubesimServer
    hub_ca_pem: bytes
    http: aiohttp.ClientSession
    keepalive_interval: float
    keepalive_misses: int
    child: KubesimServer | None = None
    backend_port: int = 0
    hub: Hub | None = None
    procs: list[Proc] = field(default_factory=list)
    _agent_count: int = 0

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def hub_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.hub_ca_pem.decode())

    def proxy_url(self, cluster_id: str, tail: str) -> str:
        assert self.hub is not None
        return f"{self.hub.url}{SOCKETS}/{cluster_id}/proxy/{tail.lstrip('/')}"

    def backend_url(self, cluster_id: str, path: str) -> str:
        return self.proxy_url(cluster_id, f"http/127.0.0.1:{self.backend_port}/{path.lstrip('/')}")

    def kubeconfig(self, cluster_id: str, token: str = ADMIN_TOKEN) -> Path:
        path = self.state / f"kubectl-{cluster_id[-6:]}.kubeconfig"
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "child",
                    "cluster": {
                        "server": self.proxy_url(cluster_id, "direct"),
                        "certificate-authority-data": base64.b64encode(self.hub_ca_pem).decode(),
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

    def start_hub(self, port: int | None = None) -> Hub:
        self.hub = Hub(self, port or (self.hub.port if self.hub else fleet.free_port())).start()
        assert self.hub.proc is not None
        self.procs.append(self.hub.proc)
        return self.hub

    async def start_agents(
        self,
        ids: list[str] | None = None,
        *,
        count: int = 0,
        first: int = 0,
        prefix: str = "lw",
        backoff: tuple[float, float] = (0.1, 1.0),
        stagger: float = 0.0,
    ) -> Agents:
        self._agent_count += 1
        name = f"agents-{self._agent_count}"
        port_file = self.state / f"{name}.port"
        events = self.state / f"{name}.events"
        assert self.hub is not None
        argv = [
            PY, "-m", "tests.reliability.procs", "agents",
            f"--hub-url={self.hub.url}", f"--hub-ca-file={self.state / 'hub-ca.crt'}",
            f"--token={AGENT_TOKEN}", f"--ids={','.join(ids or [])}",
            f"--count={count}", f"--first={first}", f"--id-prefix={prefix}",
            f"--keepalive-interval={self.keepalive_interval}",
            f"--keepalive-misses={self.keepalive_misses}",
            f"--backoff-initial={backoff[0]}", f"--backoff-max={backoff[1]}",
            f"--stagger={stagger}", f"--events={events}", f"--port-file={port_file}",
        ]  # fmt: skip
        if self.backend_port:
            argv.append(f"--dial-allow=127.0.0.1:{self.backend_port}")
        if self.child is not None:
            argv += [
                f"--child-url={self.child.url}",
                f"--child-ca-file={self.state / 'child-ca.crt'}",
                "--child-token=child-agent-token",
            ]
        proc = Proc(argv, self.state / f"{name}.log").start()
        self.procs.append(proc)
        port = await wait_port_file(port_file, proc)
        return Agents(self, name, proc, port, events)

    async def start_backend(self) -> None:
        port_file = self.state / "backend.port"
        argv = [PY, "-m", "tests.reliability.procs", "backend", f"--port-file={port_file}"]
        proc = Proc(argv, self.state / "backend.log").start()
        self.procs.append(proc)
        self.backend_port = await wait_port_file(port_file, proc)

    async def wait_connected(self, cluster_id: str, within: float = 20) -> float:
        """Until a proxied request reaches the cluster's agent; returns the seconds waited."""

        async def works() -> bool:
            url = (
                self.backend_url(cluster_id, "blob?size=10")
                if self.backend_port
                else self.proxy_url(cluster_id, "direct/version")
            )
            async with self.http.get(url, headers=self.auth(ADMIN_TOKEN)) as response:
                await response.read()
                return response.status == 200

        return await eventually(works, within=within, every=0.05)


async def _apply(server: KubesimServer, state: Path, name: str, manifest: str) -> None:
    await fleet._apply(server, state, name, manifest)


async def _install_crds(parent: KubesimServer) -> None:
    from tests.agent import world as agent_world

    async with agent_world.admin(parent) as admin:
        await agent_world.prepare_parent(admin)


DEMO_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "demo", "namespace": "default"},
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done',
                ],
            }
        ]
    },
}


@contextlib.asynccontextmanager
async def running_world(
    state: Path,
    *,
    child: bool = False,
    backend: bool = False,
    keepalive: tuple[float, int] = (15.0, 3),
) -> AsyncIterator[World]:
    """Parent + hub process (+ child with a running pod, + backend). Agents: ``start_agents``."""
    state.mkdir(parents=True, exist_ok=True)
    parent = KubesimServer(KubesimConfig(static_tokens=PARENT_TOKENS))
    child_server: KubesimServer | None = None
    await parent.start()
    http: aiohttp.ClientSession | None = None
    world: World | None = None
    try:
        await _apply(parent, state, "parent", fleet.PARENT_RBAC + "---\n" + AGENT_RBAC)
        await _install_crds(parent)
        hub_ca = pki.make_ca("clusternet-hub-ca")
        hub_cert = pki.issue_server_cert(hub_ca, ["127.0.0.1"])
        (state / "hub.crt").write_bytes(hub_cert.cert_pem)
        (state / "hub.key").write_bytes(hub_cert.key_pem)
        (state / "hub-ca.crt").write_bytes(hub_ca.cert_pem)
        kubeconfig_files.write(state / "hub.kubeconfig", parent.kubeconfig(token="hub-token"))
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=ssl.create_default_context(cadata=hub_ca.cert_pem.decode()), limit=0
            )
        )
        world = World(state, parent, hub_ca.cert_pem, http, keepalive[0], keepalive[1])
        if child:
            child_server = KubesimServer(
                KubesimConfig(
                    static_tokens=fleet.CHILD_TOKENS,
                    pod_runtime=PodRuntimeConfig(workdir=state / "pods", restart_delay=0.2),
                )
            )
            await child_server.start()
            world.child = child_server
            (state / "child-ca.crt").write_bytes(child_server.ca_pem)
            await _apply(child_server, state, "child", fleet.CHILD_RBAC)
            async with api_client(child_server) as api:
                await KubeClient(api).request(
                    "POST", "/api/v1/namespaces/default/pods", body=DEMO_POD
                )
            await child_server.settle()
            await child_server.pods.settle()
        if backend:
            await world.start_backend()
        world.start_hub()
        assert world.hub is not None
        await world.hub.wait_ready()
        yield world
    finally:
        if world is not None:
            for proc in reversed(world.procs):
                proc.kill()
        if http is not None:
            await http.close()
        if child_server is not None:
            await child_server.stop()
        await parent.stop()
