"""End-to-end hub benchmark (issue 8): kubectl-like requests direct to a child API server,
through the hub and its tunnel, and through ``ssh -L``, side by side in one run.

    python -m benchmarks.hub_bench                      # full (about 10 minutes)
    python -m benchmarks.hub_bench --quick              # smaller sizes, 3 rounds
    python -m benchmarks.hub_bench --tiny               # what the smoke test runs
    python -m benchmarks.hub_bench --only small,bulk --rounds 3

Processes (each ended by its PID): kubesim parent (aggregation, TokenReview, SAR), kubesim
child, the hub (``benchmarks._hub_procs hub``: the real ``clusternet-hub`` main plus one
bench-only debug route), the agent (Executor + TunnelClient, dialing the hub directly), an
HTTPS bulk server, ``sshd`` + ``ssh -L``, and for the fleet and watch figures a fresh hub and
swarm processes holding many lightweight agent sessions. See docs/performance.md, "Hub".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import random
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import uvloop
from multidict import CIMultiDict
from yarl import URL

from benchmarks._common import (
    MiB,
    free_port,
    machine_facts,
    percentile,
    raise_fd_limit,
    summary,
)
from benchmarks._ssh import ForwardingSsh, start_ssh_forward
from benchmarks.tunnel_bench import Child, _fmt, _fmt_ratio
from clusternet_aa.identity import UserInfo
from clusternet_aa.proxy import identity_mapping
from clusternet_aa.proxy.identity_mapping import IdentityPolicy
from clusternet_aa.sandbox.kubesim import kubeconfig as kubeconfig_files
from clusternet_aa.sandbox.kubesim import pki

REPO = Path(__file__).resolve().parent.parent
KiB = 1024
CLUSTER_ID = "5e1f0c1e-7c55-4b2e-9d0a-00000000b001"
SOCKETS = "/apis/proxies.clusternet.io/v1alpha1/sockets"
APISERVICE = "v1alpha1.proxies.clusternet.io"
USER_HEADERS = (
    ("X-Remote-User", "alice"),
    ("X-Remote-Group", "developers"),
    ("X-Remote-Group", "system:authenticated"),
)
CLK_TCK = os.sysconf("SC_CLK_TCK")

SECTIONS = ("small", "bulk", "hol", "fleet", "watch", "trend")

PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "rounds": 5,
        "requests": 1000,
        "duration": 4.0,
        "bulk_mib": 256,
        "hol_clients": 100,
        "hol_requests": 50,
        "hol_interval": 0.2,
        "fleet_sizes": "1000,5000,10000",
        "keepalive_window": 30.0,
        "scaled_keepalive": 0.5,
        "watch_tunnels": 100,
        "watch_sizes": "1000,2500,5000",
        "object_sizes": "1024,16384,131072",
    },
    "quick": {
        "rounds": 3,
        "requests": 300,
        "duration": 2.0,
        "bulk_mib": 64,
        "hol_clients": 100,
        "hol_requests": 20,
        "hol_interval": 0.2,
        "fleet_sizes": "200,500,1000",
        "keepalive_window": 15.0,
        "scaled_keepalive": 0.5,
        "watch_tunnels": 20,
        "watch_sizes": "200,500,1000",
        "object_sizes": "1024,16384,131072",
    },
    "tiny": {
        "rounds": 1,
        "requests": 20,
        "duration": 0.3,
        "bulk_mib": 2,
        "hol_clients": 5,
        "hol_requests": 3,
        "hol_interval": 0.02,
        "fleet_sizes": "4,8,12",
        "keepalive_window": 0.5,
        "scaled_keepalive": 0.1,
        "watch_tunnels": 2,
        "watch_sizes": "4,8,12",
        "object_sizes": "1024,4096,16384",
    },
}

TARGETS = {
    "p50_added_ms": 1.0,
    "throughput_vs_direct": 0.5,
    "bulk_vs_ssh": 1.0,
    "bulk_vs_tls": 0.7,
    "req_per_core": 1500.0,
    "hol_added_p99_ms": 5.0,
    "hol_held_bytes": 256 * KiB,
    "tunnels": 10_000,
    "tunnel_bytes": 64 * KiB,
    "keepalive_core_pct": 5.0,
    "watch_bytes": 16 * KiB,
}


# ---------------------------------------------------------------------- process accounting


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/PID/stat (the process's own accounting)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live descendants (sshd serves each connection from
    forked children), each from its own /proc accounting."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue  # ended while we looked
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    total = 0.0
    for member in family:
        with contextlib.suppress(OSError):
            total += cpu_seconds(member)
    return total


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


# ---------------------------------------------------------------------- the processes


class Fleet:
    """Every process of the benchmark, the certificates, and the URLs; ended by PID."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir = workdir
        self.args = args
        self.children: list[Child] = []
        self.raw: list[asyncio.subprocess.Process] = []
        self.ssh: ForwardingSsh | None = None
        self.notes: list[str] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.parent_url = self.child_url = self.hub_url = ""
        self.hub_pid = self.agent_pid = 0
        self.bulk_port = self.bulk_pid = 0

    # -------------------------------------------------------------- helpers

    async def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, ready: bool = True
    ) -> Child:
        log = (self.workdir / f"{name}-{len(self.children)}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if ready else log,
            stderr=log,
            env={**self.env, **(env or {})},
            cwd=REPO,
        )
        child = Child(name, proc, {})
        self.children.append(child)
        if ready:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 90)
            if not line:
                raise RuntimeError(f"{name} failed to start; see {log.name}")
            child.info = json.loads(line)
        return child

    def procs(self, role: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "benchmarks._hub_procs", role, *args]

    async def stop_all(self) -> None:
        if self.ssh is not None:
            await self.ssh.stop()
        for child in reversed(self.children):
            await child.stop()
        self.children.clear()

    # -------------------------------------------------------------- kubesim

    async def kubesim(self, name: str, tokens: list[str]) -> str:
        state = self.workdir / name
        state.mkdir()
        token_file = self.workdir / f"{name}-tokens.csv"
        token_file.write_text("\n".join(tokens) + "\n")
        await self.spawn(
            name,
            [
                sys.executable, "-m", "clusternet_aa.sandbox.kubesim", "--port", "0",
                "--state-dir", str(state), "--token-auth-file", str(token_file),
                "--nodes", "0", "--apiservice-resync-seconds", "1",
            ],
            ready=False,
        )  # fmt: skip
        config = state / "admin.kubeconfig"
        for _ in range(600):
            if config.exists() and (state / "admin.token").exists():
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"kubesim {name} did not start; see its log in {self.workdir}")
        import yaml

        await asyncio.sleep(0.05)
        document = yaml.safe_load(config.read_text())
        url: str = document["clusters"][0]["cluster"]["server"]
        return url

    def admin_token(self, name: str) -> str:
        return (self.workdir / name / "admin.token").read_text().strip()

    def ca_file(self, name: str) -> str:
        return str(self.workdir / name / "ca.crt")

    async def api(self, name: str, url: str, method: str, path: str, body: Any) -> Any:
        context = ssl.create_default_context(cafile=self.ca_file(name))
        headers = {"Authorization": f"Bearer {self.admin_token(name)}"}
        async with (
            aiohttp.ClientSession() as client,
            client.request(method, url + path, json=body, headers=headers, ssl=context) as resp,
        ):
            text = await resp.text()
            if resp.status >= 300 and resp.status != 409:
                raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
            return json.loads(text) if text else None

    # -------------------------------------------------------------- assembly

    async def start(self) -> None:
        raise_fd_limit()
        self.parent_url = await self.kubesim(
            "parent",
            [
                'alice-token,alice,uid-alice,"developers"',
                'hub-token,clusternet-hub,uid-hub,"system:masters"',
                'agent-token,cluster-agent,uid-agent,"system:masters"',
            ],
        )
        self.child_url = await self.kubesim(
            "child",
            [
                'alice-token,alice,uid-alice,"developers"',
                'agent-token,clusternet-agent,uid-agent,"system:masters"',
            ],
        )
        parent, child = self.parent_url, self.child_url
        rbac = "rbac.authorization.k8s.io/v1"
        await self.api("parent", parent, "POST", f"/apis/{rbac}/clusterroles", {
            "metadata": {"name": "socket-proxy-users"},
            "rules": [{"apiGroups": ["proxies.clusternet.io"],
                       "resources": ["sockets/proxy"], "verbs": ["*"]}],
        })  # fmt: skip
        await self.api("parent", parent, "POST", f"/apis/{rbac}/clusterrolebindings", {
            "metadata": {"name": "socket-proxy-users"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "socket-proxy-users"},
            "subjects": [{"kind": "User", "name": "alice"}],
        })  # fmt: skip
        await self.api("child", child, "POST", f"/apis/{rbac}/clusterrolebindings", {
            "metadata": {"name": "alice-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "alice"}],
        })  # fmt: skip
        for namespace in ("bench", "bench-watch"):
            await self.api("child", child, "POST", "/api/v1/namespaces",
                           {"metadata": {"name": namespace}})  # fmt: skip
        for size in sorted({1024, *self.args.object_sizes}):
            await self.api("child", child, "POST", "/api/v1/namespaces/bench/configmaps", {
                "metadata": {"name": f"obj-{size}"}, "data": {"v": _filler(size)},
            })  # fmt: skip
        # The hub: its own serving CA, a kubeconfig for the parent, front-proxy trust from the
        # parent's extension-apiserver-authentication ConfigMap (read by its informer).
        ca = pki.make_ca("bench-ca")
        serving = pki.issue_server_cert(
            ca, ["127.0.0.1", "localhost", "clusternet-hub.clusternet-system.svc"]
        )
        (self.workdir / "bench-ca.crt").write_bytes(ca.cert_pem)
        (self.workdir / "serving.crt").write_bytes(serving.cert_pem)
        (self.workdir / "serving.key").write_bytes(serving.key_pem)
        self.bench_ca_pem = ca.cert_pem
        kubeconfig_files.write(
            self.workdir / "hub.kubeconfig",
            kubeconfig_files.build(
                server=parent,
                ca_pem=(self.workdir / "parent" / "ca.crt").read_bytes(),
                token="hub-token",
            ),
        )
        self.hub_url, self.hub_pid = await self.start_hub("hub")
        await self.register_apiservice()
        bulk = await self.spawn(
            "bulk",
            self.procs(
                "bulk",
                "--cert", str(self.workdir / "serving.crt"),
                "--key", str(self.workdir / "serving.key"),
            ),
        )  # fmt: skip
        self.bulk_port = int(bulk.info["port"])
        self.bulk_pid = bulk.proc.pid
        agent = await self.spawn(
            "agent",
            self.procs("agent", *self.agent_args(self.hub_url), "--cluster", CLUSTER_ID),
            env={"SSL_CERT_FILE": str(self.workdir / "bench-ca.crt")},
        )
        self.agent_pid = int(agent.info["pid"])
        await self.wait_path(self.hub_url + self.hub_path(CLUSTER_ID, "obj-1024"))
        url, context, headers = self.small_targets("obj-1024")["aggregated"]
        await self.wait_path(url, context=context, headers=headers)
        if not self.args.no_ssh and {"bulk"} & set(self.args.only):
            forwarding = await start_ssh_forward(self.workdir, self.bulk_port)
            if isinstance(forwarding, str):
                self.notes.append(forwarding)
            else:
                self.ssh = forwarding

    def agent_args(self, hub_url: str) -> list[str]:
        return [
            "--hub", hub_url,
            "--hub-ca", str(self.workdir / "bench-ca.crt"),
            "--token", "agent-token",
            "--child", self.child_url,
            "--child-ca", self.ca_file("child"),
            "--child-token", "agent-token",
            "--allow", f"127.0.0.1:{self.bulk_port}",
        ]  # fmt: skip

    async def start_hub(self, name: str, keepalive: float | None = None) -> tuple[str, int]:
        port = free_port()
        env = {"BENCH_KEEPALIVE": str(keepalive)} if keepalive else {}
        child = await self.spawn(
            name,
            self.procs(
                "hub",
                "--bind-address", "127.0.0.1", "--secure-port", str(port),
                "--tls-cert-file", str(self.workdir / "serving.crt"),
                "--tls-private-key-file", str(self.workdir / "serving.key"),
                "--kubeconfig", str(self.workdir / "hub.kubeconfig"),
                "--shutdown-delay-duration", "0",
            ),
            env=env,
            ready=False,
        )  # fmt: skip
        url = f"https://127.0.0.1:{port}"
        await self.wait_path(url + "/readyz")
        return url, child.proc.pid

    async def register_apiservice(self) -> None:
        port = int(self.hub_url.rsplit(":", 1)[1])
        parent, ns = self.parent_url, "clusternet-system"
        await self.api("parent", parent, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        await self.api("parent", parent, "POST", f"/api/v1/namespaces/{ns}/services", {
            "metadata": {"name": "clusternet-hub"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        })  # fmt: skip
        await self.api("parent", parent, "POST", f"/api/v1/namespaces/{ns}/endpoints", {
            "metadata": {"name": "clusternet-hub"},
            "subsets": [{"addresses": [{"ip": "127.0.0.1"}],
                         "ports": [{"name": "https", "port": port}]}],
        })  # fmt: skip
        await self.api("parent", parent, "POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "proxies.clusternet.io", "version": "v1alpha1",
                "service": {"namespace": ns, "name": "clusternet-hub", "port": 443},
                "groupPriorityMinimum": 1000, "versionPriority": 100,
                "caBundle": base64.b64encode(self.bench_ca_pem).decode(),
            },
        })  # fmt: skip

    async def wait_path(
        self,
        url: str,
        within: float = 60,
        context: ssl.SSLContext | None = None,
        headers: CIMultiDict[str] | None = None,
    ) -> None:
        deadline = time.monotonic() + within
        last = ""
        async with aiohttp.ClientSession() as client:
            while time.monotonic() < deadline:
                try:
                    async with client.get(
                        url,
                        ssl=context or self.hub_ssl(),
                        headers=headers or CIMultiDict(USER_HEADERS),
                    ) as resp:
                        body = await resp.read()
                        if resp.status == 200:
                            return
                        last = f"HTTP {resp.status}: {body[:300]!r}"
                except (aiohttp.ClientError, OSError) as exc:
                    last = repr(exc)
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{url} not ready: {last}")

    # -------------------------------------------------------------- client material

    def hub_ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.workdir / "bench-ca.crt"))
        parent = self.workdir / "parent"
        context.load_cert_chain(
            parent / "front-proxy-client.crt", parent / "front-proxy-client.key"
        )
        return context

    def bench_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.workdir / "bench-ca.crt"))

    def hub_path(self, cluster_id: str, name: str, namespace: str = "bench") -> str:
        return (
            f"{SOCKETS}/{cluster_id}/proxy/direct/api/v1/namespaces/{namespace}/configmaps/{name}"
        )

    def small_targets(self, name: str) -> dict[str, tuple[str, ssl.SSLContext, CIMultiDict[str]]]:
        accept = ("Accept", "application/json")
        bearer = ("Authorization", "Bearer alice-token")
        # What the agent sends the child for alice: its own token plus Impersonate-* headers,
        # built by the same code, so the child's cost of impersonation can be told apart.
        alice = UserInfo(
            name="alice", uid="uid-alice", groups=("developers", "system:authenticated")
        )
        impersonated = [
            ("Authorization", "Bearer agent-token"),
            *identity_mapping.impersonation_headers(IdentityPolicy().map(alice)),
        ]
        child_url = f"{self.child_url}/api/v1/namespaces/bench/configmaps/{name}"
        return {
            "direct": (
                child_url,
                ssl.create_default_context(cafile=self.ca_file("child")),
                CIMultiDict([accept, bearer]),
            ),
            "impersonated": (
                child_url,
                ssl.create_default_context(cafile=self.ca_file("child")),
                CIMultiDict([accept, *impersonated]),
            ),
            "hub": (
                self.hub_url + self.hub_path(CLUSTER_ID, name),
                self.hub_ssl(),
                CIMultiDict([accept, *USER_HEADERS]),
            ),
            "aggregated": (
                self.parent_url + self.hub_path(CLUSTER_ID, name),
                ssl.create_default_context(cafile=self.ca_file("parent")),
                CIMultiDict([accept, bearer]),
            ),
        }

    async def debug(
        self, hub_url: str | None = None, path: str = "", method: str = "GET"
    ) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as client,
            client.request(
                method,
                (hub_url or self.hub_url) + "/debug/bench" + path,
                ssl=self.hub_ssl(),
                headers=CIMultiDict(USER_HEADERS),
            ) as resp,
        ):
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result


def _filler(size: int) -> str:
    # The ConfigMap's JSON is about ``size`` bytes: metadata takes about 300 of them.
    return "x" * max(1, size - 300)


# ---------------------------------------------------------------------- small requests


async def latency_run(
    url: str, context: ssl.SSLContext, headers: CIMultiDict[str], requests: int
) -> list[float]:
    """Sequential GETs on one keep-alive connection; seconds per request."""
    connector = aiohttp.TCPConnector(limit=1, ssl=context)
    samples: list[float] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:
        for i in range(requests + 20):
            start = time.perf_counter()
            async with client.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status}")
            if i >= 20:  # warm-up: connection, caches
                samples.append(time.perf_counter() - start)
    return samples


async def throughput_run(
    url: str,
    context: ssl.SSLContext,
    headers: CIMultiDict[str],
    concurrency: int,
    duration: float,
    pids: dict[str, int],
) -> dict[str, float]:
    """``concurrency`` workers on their own keep-alive connections for ``duration`` s."""
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=context)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:

        async def fetch() -> None:
            async with client.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"GET {url}: {resp.status}")

        return await _timed_workers(fetch, concurrency, duration, pids)


async def _timed_workers(
    fetch: Callable[[], Awaitable[None]], concurrency: int, duration: float, pids: dict[str, int]
) -> dict[str, float]:
    """``concurrency`` workers repeating ``fetch`` for ``duration`` s (after one warm-up fetch
    each), with the CPU seconds each process in ``pids`` spent meanwhile."""
    await asyncio.gather(*(fetch() for _ in range(concurrency)))  # warm-up, connections open
    done = 0
    stop_at = 0.0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await fetch()
            done += 1

    cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
    result = {"requests": float(done), "seconds": elapsed, "rps": done / elapsed}
    for role, seconds in cpu.items():
        result[f"{role}_cpu_s"] = seconds
    return result


class H2Client(asyncio.Protocol):
    """The benchmark's HTTP/2 client: one TLS connection (ALPN h2), streams opened as Go's
    transport opens them (sequentially at c=1, concurrently at c=32, all on this connection).

    Its own cost is kept small and equal between runs: no header validation or normalisation
    (the headers are the benchmark's own constants), bytes headers, windows as large as Go's
    (4 MiB per stream, 1 GiB per connection) so that WINDOW_UPDATEs are rare.
    """

    def __init__(self) -> None:
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        self._transport: asyncio.Transport | None = None
        # stream id -> (future of (status, body), body chunks); the status is set on HEADERS.
        self._streams: dict[int, tuple[asyncio.Future[tuple[int, bytes]], list[bytes]]] = {}
        self._status: dict[int, int] = {}
        self._error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self._error = RuntimeError("the hub did not negotiate h2")
            self._transport.close()
            return
        conn = self._conn
        conn.local_settings.initial_window_size = 4 * MiB
        conn.initiate_connection()
        conn.increment_flow_control_window(1024 * MiB - 65535)
        self._transport.write(conn.data_to_send())

    async def get(self, head: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        """One request (``head``: pseudo-headers first, then the headers, all lower-case)."""
        if self._error is not None:
            raise self._error
        assert self._transport is not None
        conn = self._conn
        stream_id = conn.get_next_available_stream_id()
        done: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._streams[stream_id] = (done, [])
        conn.send_headers(stream_id, head, end_stream=True)
        self._transport.write(conn.data_to_send())
        return await done

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail(RuntimeError(f"h2: {exc!r}"))
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self._streams[event.stream_id][1].append(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived):
                for name, value in event.headers:
                    if name == b":status":
                        self._status[event.stream_id] = int(value)
                        break
            elif isinstance(event, h2.events.StreamEnded):
                done, chunks = self._streams.pop(event.stream_id)
                status = self._status.pop(event.stream_id, 0)
                if not done.done():
                    done.set_result((status, b"".join(chunks)))
            elif isinstance(event, h2.events.StreamReset):
                entry = self._streams.pop(event.stream_id, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_exception(RuntimeError(f"stream reset: {event!r}"))
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._fail(RuntimeError(f"GOAWAY: {event!r}"))
        out = conn.data_to_send()
        if out and self._transport is not None:
            self._transport.write(out)

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        for done, _ in self._streams.values():
            if not done.done():
                done.set_exception(exc)
        self._streams.clear()
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"h2 connection closed: {exc!r}"))

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._conn.close_connection()
            self._transport.write(self._conn.data_to_send())
            self._transport.close()


@contextlib.asynccontextmanager
async def h2_client(
    url: str, context: ssl.SSLContext, headers: CIMultiDict[str]
) -> AsyncIterator[tuple[H2Client, list[tuple[bytes, bytes]]]]:
    """An :class:`H2Client` connected to ``url``'s server, and the request head for ``url``."""
    target = URL(url)
    host, port = target.host or "127.0.0.1", target.port or 443
    context.set_alpn_protocols(["h2"])
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        H2Client, host, port, ssl=context, server_hostname=host
    )
    head = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", f"{host}:{port}".encode()),
        (b":path", target.raw_path_qs.encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    try:
        yield client, head
    finally:
        client.close()


async def latency_run_h2(
    url: str, context: ssl.SSLContext, headers: CIMultiDict[str], requests: int
) -> list[float]:
    """Sequential GETs, one stream after the other on one HTTP/2 connection; seconds each."""
    samples: list[float] = []
    async with h2_client(url, context, headers) as (client, head):
        for i in range(requests + 20):
            start = time.perf_counter()
            status, _ = await client.get(head)
            if status != 200:
                raise RuntimeError(f"GET {url} over h2: {status}")
            if i >= 20:  # warm-up: connection, caches
                samples.append(time.perf_counter() - start)
    return samples


async def throughput_run_h2(
    url: str,
    context: ssl.SSLContext,
    headers: CIMultiDict[str],
    concurrency: int,
    duration: float,
    pids: dict[str, int],
) -> dict[str, float]:
    """``concurrency`` workers, each with one stream at a time, all on one HTTP/2 connection
    (as Go's transport multiplexes a client's requests) for ``duration`` s."""
    async with h2_client(url, context, headers) as (client, head):

        async def fetch() -> None:
            status, _ = await client.get(head)
            if status != 200:
                raise RuntimeError(f"GET {url} over h2: {status}")

        return await _timed_workers(fetch, concurrency, duration, pids)


async def small_section(
    fleet: Fleet,
    args: argparse.Namespace,
    name: str,
    rounds: int,
    requests: int,
    paths: tuple[str, ...] = ("direct", "impersonated", "hub", "hub_h2", "aggregated"),
) -> dict[str, Any]:
    targets = fleet.small_targets(name)
    # The hub over HTTP/2 (as the aggregator reaches it): same URL and identity, own context
    # (the h2 client sets its ALPN).
    url, _, headers = targets["hub"]
    targets["hub_h2"] = (url, fleet.hub_ssl(), headers)
    paths = tuple(paths)
    raw: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    pids = {"hub": fleet.hub_pid, "agent": fleet.agent_pid}
    for round_no in range(rounds):
        order = paths[round_no % len(paths) :] + paths[: round_no % len(paths)]
        for path in order:
            url, context, headers = targets[path]
            _log(args, f"  {name} {path} round {round_no + 1}")
            h2_path = path == "hub_h2"
            before = {role: cpu_seconds(pid) for role, pid in pids.items()}
            lat = await (latency_run_h2 if h2_path else latency_run)(
                url, context, headers, requests
            )
            figures = raw[path]
            if path in ("hub", "hub_h2", "aggregated"):
                # CPU per request at c=1 is the latency's budget: each process wakes per
                # request with cold caches, so it costs far more than under load (c=32).
                for role, pid in pids.items():
                    figures.setdefault(f"{role}_cpu_ms_c1", []).append(
                        (cpu_seconds(pid) - before[role]) * 1e3 / (requests + 20)
                    )
            figures.setdefault("p50_ms", []).append(percentile(lat, 50) * 1e3)
            figures.setdefault("p99_ms", []).append(percentile(lat, 99) * 1e3)
            tput = await (throughput_run_h2 if h2_path else throughput_run)(
                url, context, headers, 32, args.duration, pids
            )
            figures.setdefault("rps_c32", []).append(tput["rps"])
            if path in ("hub", "hub_h2", "aggregated"):
                per_k = 1000 / max(tput["requests"], 1)
                figures.setdefault("hub_cpu_s_per_1000", []).append(tput["hub_cpu_s"] * per_k)
                figures.setdefault("agent_cpu_s_per_1000", []).append(tput["agent_cpu_s"] * per_k)
                figures.setdefault("rps_per_hub_core", []).append(
                    tput["requests"] / max(tput["hub_cpu_s"], 1e-9)
                )
    result: dict[str, Any] = {
        p: {k: summary(v) for k, v in figs.items()} for p, figs in raw.items()
    }
    if "impersonated" in raw:
        result["hub"]["added_p50_vs_impersonated_ms"] = summary(
            [
                a - b
                for a, b in zip(raw["hub"]["p50_ms"], raw["impersonated"]["p50_ms"], strict=True)
            ]
        )
    for path in paths[1:]:
        result[path]["added_p50_ms"] = summary(
            [a - b for a, b in zip(raw[path]["p50_ms"], raw["direct"]["p50_ms"], strict=True)]
        )
        result[path]["added_p99_ms"] = summary(
            [a - b for a, b in zip(raw[path]["p99_ms"], raw["direct"]["p99_ms"], strict=True)]
        )
        result[path]["rps_vs_direct"] = _ratio(raw[path]["rps_c32"], raw["direct"]["rps_c32"])
    return result


def _ratio(a: list[float], b: list[float]) -> dict[str, Any]:
    result = summary([x / y for x, y in zip(a, b, strict=True)])
    result["of_medians"] = summary(a)["median"] / summary(b)["median"]
    return result


# ---------------------------------------------------------------------- bulk


class HttpTransfer(asyncio.Protocol):
    """One HTTP/1.1 request on a fresh connection, counting the response body's bytes."""

    def __init__(self, head: bytes, upload: int, done: asyncio.Future[float]) -> None:
        self._head = head
        self._upload = upload
        self._done = done
        self._buffer = b""
        self._length = -1
        self._got = 0
        self._paused = False
        self.transport: asyncio.Transport | None = None
        self.head_seen: asyncio.Future[None] = done.get_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._head)
        self._pump()

    def _pump(self) -> None:
        assert self.transport is not None
        blob = _BLOB
        while self._upload > 0 and not self._paused:
            n = min(self._upload, len(blob))
            self.transport.write(blob if n == len(blob) else blob[:n])
            self._upload -= n

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self._length < 0:
            self._buffer += data
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            if status != 200:
                self._fail(RuntimeError(f"HTTP {status}: {self._buffer[:500]!r}"))
                return
            fields = (line.partition(":") for line in head)
            self._length = next((int(v) for k, _, v in fields if k.lower() == "content-length"), 0)
            data = self._buffer[end + 4 :]
            self._buffer = b""
            if not self.head_seen.done():
                self.head_seen.set_result(None)
        self._got += len(data)
        if self._got >= self._length and not self._done.done():
            self._done.set_result(time.perf_counter())

    def _fail(self, exc: Exception) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        if not self.head_seen.done():
            self.head_seen.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"closed after {self._got} of {self._length}: {exc!r}"))


_BLOB = bytes(range(256)) * 1024  # 256 KiB


def _request_head(method: str, path: str, headers: list[tuple[str, str]], length: int) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    if method == "PUT":
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def http_transfer(
    port: int,
    context: ssl.SSLContext,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    size: int,
) -> float:
    """Seconds for one request moving ``size`` bytes (connection setup included)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    head = _request_head(method, path, headers, size)
    proto = HttpTransfer(head, size if method == "PUT" else 0, done)
    start = time.perf_counter()
    transport, _ = await loop.create_connection(
        lambda: proto, "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        end = await done
    finally:
        transport.close()
    return end - start


def _bulk_meters(fleet: Fleet, path: str) -> dict[str, Callable[[], float]]:
    """CPU-seconds readers of the processes a bulk transfer on ``path`` keeps busy."""
    meters: dict[str, Callable[[], float]] = {
        "client": time.process_time,
        "server": lambda: cpu_seconds(fleet.bulk_pid),
    }
    if path == "tunnel":
        meters["hub"] = lambda: cpu_seconds(fleet.hub_pid)
        meters["agent"] = lambda: cpu_seconds(fleet.agent_pid)
    elif path == "ssh" and fleet.ssh is not None:
        for proc in fleet.ssh.processes:  # sshd (with its per-connection children), ssh
            meters[f"ssh-{proc.pid}"] = functools.partial(tree_cpu_seconds, proc.pid)
    return meters


async def bulk_section(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.bulk_mib * MiB)
    hub_port = int(fleet.hub_url.rsplit(":", 1)[1])
    via = f"{SOCKETS}/{CLUSTER_ID}/proxy/https/127.0.0.1:{fleet.bulk_port}"
    paths: dict[str, tuple[int, ssl.SSLContext, str, list[tuple[str, str]]]] = {
        "tls": (fleet.bulk_port, fleet.bench_ssl(), "", []),
        "tunnel": (hub_port, fleet.hub_ssl(), via, list(USER_HEADERS)),
    }
    if fleet.ssh is not None:
        paths["ssh"] = (fleet.ssh.local_port, fleet.bench_ssl(), "", [])
    raw: dict[str, dict[str, list[float]]] = {"download": {}, "upload": {}}
    cpu: dict[str, list[float]] = {}
    # CPU ms per MiB of every process each path keeps busy: its two ends (this process, the
    # bulk server) and its relays (none; hub + agent; ssh + sshd and its forked children).
    path_cpu: dict[str, dict[str, dict[str, list[float]]]] = {}
    names = list(paths)
    for round_no in range(args.rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        for direction in ("download", "upload"):
            for name in order:
                port, context, prefix, headers = paths[name]
                method, path = ("GET", f"{prefix}/bytes/{size}") if direction == "download" else (
                    "PUT", f"{prefix}/upload")  # fmt: skip
                meters = _bulk_meters(fleet, name)
                before = {role: meter() for role, meter in meters.items()}
                seconds = await http_transfer(port, context, method, path, headers, size)
                raw[direction].setdefault(name, []).append(size / seconds / 1e6)
                mib = size / MiB
                spent = {
                    role: (meter() - before[role]) * 1e3 / mib for role, meter in meters.items()
                }
                if name == "tunnel":
                    cpu.setdefault(f"hub_ms_per_mib_{direction}", []).append(spent["hub"])
                    cpu.setdefault(f"agent_ms_per_mib_{direction}", []).append(spent["agent"])
                relays = sum(v for role, v in spent.items() if role not in ("client", "server"))
                for key, value in (
                    ("relays", relays),
                    ("ends", spent["client"] + spent["server"]),
                    ("all", sum(spent.values())),
                ):
                    path_cpu.setdefault(direction, {}).setdefault(name, {}).setdefault(
                        key, []
                    ).append(value)
    result: dict[str, Any] = {
        "mbps": {d: {p: summary(v) for p, v in by.items()} for d, by in raw.items()},
        "ratios": {
            d: {
                f"tunnel/{base}": _ratio(by["tunnel"], by[base])
                for base in ("tls", "ssh")
                if base in by
            }
            for d, by in raw.items()
        },
        "cpu": {k: summary(v) for k, v in cpu.items()},
        "cpu_ms_per_mib": {
            d: {p: {k: summary(v) for k, v in figs.items()} for p, figs in by.items()}
            for d, by in path_cpu.items()
        },
        "cpus": os.cpu_count() or 1,
        "source": f"HTTPS/1.1 server (benchmarks._hub_procs bulk) at 127.0.0.1:{fleet.bulk_port}; "
        "through the hub as a url target (sockets/<id>/proxy/https/127.0.0.1:<port>/...)",
    }
    return result


# ---------------------------------------------------------------------- head-of-line


async def hol_clients(
    fleet: Fleet, clients: int, requests: int, interval: float = 0.0
) -> list[float]:
    """``clients`` keep-alive connections each do ``requests`` small GETs through the hub, one
    every ``interval`` s (random phase; back to back when 0 or when a request takes longer)."""
    url, context, headers = fleet.small_targets("obj-1024")["hub"]
    connector = aiohttp.TCPConnector(limit=clients, ssl=context)
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as client:

        async def worker(record: bool, count: int) -> None:
            next_at = time.perf_counter() + (random.random() * interval if record else 0)
            for _ in range(count):
                if record and interval:
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                    next_at += interval
                start = time.perf_counter()
                async with client.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {url}: {resp.status}")
                if record:
                    latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(False, 2) for _ in range(clients)))
        await asyncio.gather(*(worker(True, requests) for _ in range(clients)))
    return latencies


async def hol_section(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, list[float]] = {}
    hub_port = int(fleet.hub_url.rsplit(":", 1)[1])
    path = f"{SOCKETS}/{CLUSTER_ID}/proxy/https/127.0.0.1:{fleet.bulk_port}/bytes/{1 << 40}"
    loop = asyncio.get_running_loop()
    for _ in range(args.rounds):
        base = await hol_clients(fleet, args.hol_clients, args.hol_requests, args.hol_interval)
        rss_before = rss_of(fleet.hub_pid)
        done: asyncio.Future[float] = loop.create_future()
        proto = HttpTransfer(_request_head("GET", path, list(USER_HEADERS), 0), 0, done)
        transport, _ = await loop.create_connection(
            lambda proto=proto: proto,  # type: ignore[misc]
            "127.0.0.1",
            hub_port,
            ssl=fleet.hub_ssl(),
            server_hostname="127.0.0.1",
        )
        try:
            await asyncio.wait_for(proto.head_seen, 30)
            transport.pause_reading()  # the stalled client: reads nothing more
            held = await _settled_hold(fleet)
            raw.setdefault("stalled_fill_rss_bytes", []).append(rss_of(fleet.hub_pid) - rss_before)
            stalled = await hol_clients(
                fleet, args.hol_clients, args.hol_requests, args.hol_interval
            )
            raw.setdefault("held_stream_bytes", []).append(held[0])
            raw.setdefault("held_write_buffer_bytes", []).append(held[1])
            raw.setdefault("held_bytes", []).append(held[0] + held[1])
        finally:
            transport.abort()
            done.cancel()
        for key, lat in (("baseline", base), ("stalled", stalled)):
            raw.setdefault(f"{key}_p50_ms", []).append(percentile(lat, 50) * 1e3)
            raw.setdefault(f"{key}_p99_ms", []).append(percentile(lat, 99) * 1e3)
        raw.setdefault("added_p99_ms", []).append(
            raw["stalled_p99_ms"][-1] - raw["baseline_p99_ms"][-1]
        )
        await asyncio.sleep(0.3)
    return {k: summary(v) for k, v in raw.items()}


async def _settled_hold(fleet: Fleet) -> tuple[int, int]:
    """(stream bytes, write-buffer bytes) the hub holds for the stalled download, once stable."""
    last: tuple[int, int] | None = None
    for _ in range(100):
        await asyncio.sleep(0.1)
        report = await fleet.debug()
        stream = max((s["buffered"] for s in report["streams"]), default=0)
        buffers = max(report["write_buffers"], default=0)
        now = (int(stream), int(buffers))
        if now == last and stream > 0:
            return now
        last = now
    assert last is not None
    return last


# ---------------------------------------------------------------------- fleet of idle tunnels


async def fleet_section(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.fleet_sizes
    result: dict[str, Any] = {"sizes": sizes, "per_size": {}, "per_helper": args.per_helper}
    hub_url, hub_pid = await fleet.start_hub("fleet-hub")
    helpers = [
        await fleet.spawn("swarm", fleet.procs("swarm", *fleet.agent_args(hub_url)[:6]))
        for _ in range(math.ceil(sizes[-1] / args.per_helper))
    ]
    await asyncio.sleep(0.5)
    base_rss = rss_of(hub_pid)
    have = [0] * len(helpers)
    try:
        for size in sizes:
            started = time.perf_counter()
            wanted = [
                min(args.per_helper, max(0, size - i * args.per_helper))
                for i in range(len(helpers))
            ]
            await asyncio.gather(*(
                h.command(f"connect {w - n} fleet{i}", within=900)
                for i, (h, w, n) in enumerate(zip(helpers, wanted, have, strict=True)) if w > n
            ))  # fmt: skip
            have = wanted
            connect_s = time.perf_counter() - started
            await asyncio.sleep(1.0)
            report = await fleet.debug(hub_url)
            rss = rss_of(hub_pid)
            cpu0, t0 = cpu_seconds(hub_pid), time.perf_counter()
            await asyncio.sleep(args.keepalive_window)
            cpu_pct = (cpu_seconds(hub_pid) - cpu0) / (time.perf_counter() - t0) * 100
            result["per_size"][str(size)] = {
                "tunnels": report["tunnels"],
                "connect_seconds": connect_s,
                "hub_rss_bytes": rss,
                "hub_rss_per_tunnel_bytes": (rss - base_rss) / size,
                "keepalive_cpu_pct": cpu_pct,
                "keepalive_interval_s": 15.0,
            }
    finally:
        for helper in helpers:
            await helper.stop()
            fleet.children.remove(helper)
    await _stop_named(fleet, "fleet-hub")
    # The same at a scaled keepalive interval (hub and agents), at the smallest size, so that
    # the keepalive cost is far above the idle process's noise; extrapolated to 15 s.
    interval = args.scaled_keepalive
    n = args.scaled_tunnels or sizes[0]
    hub_url, hub_pid = await fleet.start_hub("fleet-hub-scaled", keepalive=interval)
    helper = await fleet.spawn(
        "swarm", fleet.procs("swarm", *fleet.agent_args(hub_url)[:6]),
        env={"BENCH_KEEPALIVE": str(interval)},
    )  # fmt: skip
    try:
        await helper.command(f"connect {n} scaled", within=900)
        await asyncio.sleep(1.0)
        window = args.scaled_window or max(args.keepalive_window / 3, 10 * interval)
        cpu0, t0 = cpu_seconds(hub_pid), time.perf_counter()
        await asyncio.sleep(window)
        pct = (cpu_seconds(hub_pid) - cpu0) / (time.perf_counter() - t0) * 100
    finally:
        await helper.stop()
        fleet.children.remove(helper)
    await _stop_named(fleet, "fleet-hub-scaled")
    result["scaled"] = {
        "tunnels": n,
        "interval_s": interval,
        "cpu_pct": pct,
        "cpu_pct_at_15s_for_10000": pct * (interval / 15.0) * (TARGETS["tunnels"] / n),
    }
    return result


async def _stop_named(fleet: Fleet, name: str) -> None:
    for child in list(fleet.children):
        if child.role == name:
            await child.stop()
            fleet.children.remove(child)


# ---------------------------------------------------------------------- idle watches


class Watch(asyncio.Protocol):
    def __init__(self, head: bytes, seen: asyncio.Future[None]) -> None:
        self._head = head
        self._seen = seen
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self._head)

    def data_received(self, data: bytes) -> None:
        if self._seen.done():
            return
        self._buffer += data
        if b"\r\n\r\n" in self._buffer:
            status = self._buffer.split(b" ", 2)[1]
            if status == b"200":
                self._seen.set_result(None)
            else:
                self._seen.set_exception(RuntimeError(f"watch: {self._buffer[:300]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._seen.done():
            self._seen.set_exception(ConnectionError(f"watch closed: {exc!r}"))


class WatchesH2(asyncio.Protocol):
    """One HTTP/2 connection carrying many idle watches, as the aggregator multiplexes them."""

    def __init__(self, paths: list[str], seen: asyncio.Future[None]) -> None:
        self._paths = paths
        self._seen = seen
        self._ok = 0
        self._transport: asyncio.Transport | None = None
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            self._seen.set_exception(RuntimeError("the hub did not negotiate h2"))
            return
        conn = self._conn
        conn.initiate_connection()
        headers = [(k.lower(), v) for k, v in (*USER_HEADERS, ("Accept", "application/json"))]
        for path in self._paths:
            conn.send_headers(
                conn.get_next_available_stream_id(),
                [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"),
                 (":path", path), *headers],
                end_stream=True,
            )  # fmt: skip
        self._transport.write(conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self._conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status")
                if status != b"200" and not self._seen.done():
                    self._seen.set_exception(RuntimeError(f"watch: {event.headers!r}"))
                self._ok += 1
                if self._ok == len(self._paths) and not self._seen.done():
                    self._seen.set_result(None)
            elif isinstance(event, h2.events.DataReceived):
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif (
                isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated))
                and not self._seen.done()
            ):
                self._seen.set_exception(RuntimeError(f"watch: {event!r}"))
        if self._transport is not None:
            self._transport.write(self._conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._seen.done():
            self._seen.set_exception(ConnectionError(f"watch connection closed: {exc!r}"))


async def watch_section(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    """Idle watches: one TLS connection each (HTTP/1.1, as an HTTP/1.1 proxy opens them), then
    the same over HTTP/2, ``--watches-per-connection`` streams per connection, each on a fresh
    hub so that memory one figure freed cannot hide the other's growth."""
    result: dict[str, Any] = {"tunnels": args.watch_tunnels}
    result["per_size"] = await _watch_figure(fleet, args, "http/1.1", 1, result)
    per_connection = args.watches_per_connection
    result["http2"] = {"per_connection": per_connection}
    result["http2"]["per_size"] = await _watch_figure(
        fleet, args, "h2", per_connection, result["http2"]
    )
    return result


async def _watch_figure(
    fleet: Fleet, args: argparse.Namespace, alpn: str, per_connection: int, out: dict[str, Any]
) -> dict[str, Any]:
    name = "watch-hub-h2" if alpn == "h2" else "watch-hub"
    hub_url, hub_pid = await fleet.start_hub(name)
    helper = await fleet.spawn("swarm-watch", fleet.procs("swarm", *fleet.agent_args(hub_url)))
    await helper.command(f"connect {args.watch_tunnels} watch")
    hub_port = int(hub_url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    context = fleet.hub_ssl()
    context.set_alpn_protocols([alpn])
    transports: list[asyncio.Transport] = []
    # Warm the hub's SAR cache and pools for every tunnel, then take the baseline.
    for i in range(args.watch_tunnels):
        await fleet.wait_path(hub_url + fleet.hub_path(f"watch-{i}", "obj-1024"))
    await asyncio.sleep(0.5)
    base = rss_of(hub_pid)
    per_size: dict[str, Any] = {}
    gate = asyncio.Semaphore(64)

    def path(i: int) -> str:
        return (
            f"{SOCKETS}/watch-{i % args.watch_tunnels}/proxy/direct/api/v1/namespaces/"
            "bench-watch/configmaps?watch=true&timeoutSeconds=3600"
        )

    async def open_watches(first: int, last: int) -> None:
        seen: asyncio.Future[None] = loop.create_future()
        if alpn == "h2":
            paths = [path(i) for i in range(first, last)]
            factory: Callable[[], asyncio.Protocol] = lambda: WatchesH2(paths, seen)  # noqa: E731
        else:
            accept = ("Accept", "application/json")
            head = _request_head("GET", path(first), [*USER_HEADERS, accept], 0)
            factory = lambda: Watch(head, seen)  # noqa: E731
        async with gate:
            transport, _ = await loop.create_connection(
                factory, "127.0.0.1", hub_port, ssl=context, server_hostname="127.0.0.1"
            )
            transports.append(transport)
            await asyncio.wait_for(seen, 60)

    if args.trace_watches:
        await fleet.debug(hub_url, path="/tracemalloc/start", method="POST")
    have = 0
    try:
        for size in args.watch_sizes:
            await asyncio.gather(
                *(
                    open_watches(i, min(i + per_connection, size))
                    for i in range(have, size, per_connection)
                )
            )
            have = size
            await asyncio.sleep(1.0)
            rss = rss_of(hub_pid)
            report = await fleet.debug(hub_url)
            per_size[str(size)] = {
                "watches": size,
                "connections": len(transports),
                "hub_streams": len(report["streams"]),
                "hub_rss_bytes": rss,
                "hub_rss_per_watch_bytes": (rss - base) / size,
            }
        if args.trace_watches:
            traced = await fleet.debug(hub_url, path="/tracemalloc/diff?n=40", method="POST")
            out["tracemalloc_per_watch_bytes"] = traced["total"] / have
            out["tracemalloc_top"] = traced["top"]
    finally:
        for transport in transports:
            transport.abort()
        await helper.stop()
        fleet.children.remove(helper)
        await _stop_named(fleet, name)
    return per_size


# ---------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "command": "python -m benchmarks.hub_bench " + " ".join(shlex.quote(a) for a in args.argv),
        "inputs": {k: v for k, v in vars(args).items() if k not in ("argv", "out", "quiet")},
        "machine": machine_facts(),
        "notes": [],
    }
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="hub-bench-")
            report["notes"].append(f"work folder kept: {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-bench-"))
        fleet = Fleet(Path(tmp), args)
        try:
            await fleet.start()
            report["notes"] += fleet.notes
            await _sections(fleet, args, report)
        finally:
            await fleet.stop_all()
    report["targets"] = evaluate(report)
    return report


async def _sections(fleet: Fleet, args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Each section in turn; one that fails is noted and the others still run."""
    sections: list[tuple[str, str, Callable[[], Any]]] = [
        ("small", "small GET (figures 1 and 3)",
         lambda: small_section(fleet, args, "obj-1024", args.rounds, args.requests)),
        ("bulk", "bulk (figure 2)", lambda: bulk_section(fleet, args)),
        ("hol", "head-of-line (figure 4)", lambda: hol_section(fleet, args)),
        ("trend_small", "object sizes (figure 7)", lambda: trend_section(fleet, args)),
        ("watch", "idle watches (figure 6)", lambda: watch_section(fleet, args)),
        ("fleet", "idle tunnels (figure 5)", lambda: fleet_section(fleet, args)),
    ]  # fmt: skip
    for key, title, section in sections:
        if (key.split("_")[0] not in args.only and key != "trend_small") or (
            key == "trend_small" and "trend" not in args.only
        ):
            continue
        _log(args, title)
        try:
            report[key] = await section()
        except Exception as exc:  # noqa: BLE001 - a failed figure is reported, the rest still runs
            report["notes"].append(f"{key} failed: {type(exc).__name__}: {exc}")
            _log(args, f"{key} FAILED: {exc!r}")


async def trend_section(fleet: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    return {
        str(size): await small_section(
            fleet,
            args,
            f"obj-{size}",
            max(1, args.rounds // 2),
            args.requests // 2,
            paths=("direct", "hub"),
        )
        for size in args.object_sizes
    }


def _log(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- targets and output


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, ok: Callable[[float], bool]) -> None:
        result = "SKIP" if value is None else ("PASS" if ok(value) else "MISS")
        targets.append({"target": name, "value": value, "limit": limit, "result": result})

    if "small" in report:
        hub = report["small"]["hub"]
        add("small GET p50 added latency <= 1 ms (hub direct)", hub["added_p50_ms"]["median"],
            TARGETS["p50_added_ms"], lambda v: v <= TARGETS["p50_added_ms"])  # fmt: skip
        add("small GET c=32 throughput >= 0.5x direct (hub direct)",
            hub["rps_vs_direct"]["of_medians"], TARGETS["throughput_vs_direct"],
            lambda v: v >= TARGETS["throughput_vs_direct"])  # fmt: skip
        add(">= 1,500 proxied small requests/s per hub core", hub["rps_per_hub_core"]["median"],
            TARGETS["req_per_core"], lambda v: v >= TARGETS["req_per_core"])  # fmt: skip
        # The same targets over HTTP/2, the protocol the aggregator speaks to the hub.
        hub_h2 = report["small"].get("hub_h2")
        if hub_h2 is not None:
            add("small GET p50 added latency <= 1 ms (hub over HTTP/2)",
                hub_h2["added_p50_ms"]["median"], TARGETS["p50_added_ms"],
                lambda v: v <= TARGETS["p50_added_ms"])  # fmt: skip
            add("small GET c=32 throughput >= 0.5x direct (hub over HTTP/2)",
                hub_h2["rps_vs_direct"]["of_medians"], TARGETS["throughput_vs_direct"],
                lambda v: v >= TARGETS["throughput_vs_direct"])  # fmt: skip
            add(">= 1,500 proxied small requests/s per hub core (HTTP/2)",
                hub_h2["rps_per_hub_core"]["median"], TARGETS["req_per_core"],
                lambda v: v >= TARGETS["req_per_core"])  # fmt: skip
    if "bulk" in report:
        for direction, ratios in report["bulk"]["ratios"].items():
            for base, key, label in (("ssh", "bulk_vs_ssh", "1.0x ssh -L"),
                                     ("tls", "bulk_vs_tls", "0.7x direct TLS")):  # fmt: skip
                ratio = ratios.get(f"tunnel/{base}")
                limit = TARGETS[key]
                add(f"bulk {direction} >= {label}", ratio["of_medians"] if ratio else None,
                    limit, lambda v, limit=limit: v >= limit)  # type: ignore[misc]  # fmt: skip
    if "hol" in report:
        hol = report["hol"]
        add("stalled stream: others' p99 rises <= 5 ms", hol["added_p99_ms"]["median"],
            TARGETS["hol_added_p99_ms"], lambda v: v <= TARGETS["hol_added_p99_ms"])  # fmt: skip
        add("stalled stream: hub memory held <= 256 KiB", hol["held_bytes"]["max"],
            TARGETS["hol_held_bytes"], lambda v: v <= TARGETS["hol_held_bytes"])  # fmt: skip
    if "fleet" in report:
        per = report["fleet"]["per_size"]
        largest = per[str(report["fleet"]["sizes"][-1])]
        add("10,000 idle tunnels in one hub process", float(largest["tunnels"]),
            TARGETS["tunnels"], lambda v: v >= TARGETS["tunnels"])  # fmt: skip
        add("idle tunnel <= 64 KiB of hub RSS", largest["hub_rss_per_tunnel_bytes"],
            TARGETS["tunnel_bytes"], lambda v: v <= TARGETS["tunnel_bytes"])  # fmt: skip
        add(
            "keepalives <= 5% of one core (largest fleet, 15 s)",
            largest["keepalive_cpu_pct"],
            TARGETS["keepalive_core_pct"],
            lambda v: v <= TARGETS["keepalive_core_pct"],
        )
        add(
            "keepalives <= 5% of one core (10,000 at 15 s, from the scaled run)",
            report["fleet"]["scaled"]["cpu_pct_at_15s_for_10000"],
            TARGETS["keepalive_core_pct"],
            lambda v: v <= TARGETS["keepalive_core_pct"],
        )
    if "watch" in report:
        # The target is checked on the HTTP/2 figure (how the aggregator and client-go reach
        # the hub); the HTTP/1.1 figure (one connection per watch) is reported beside it.
        per = report["watch"]["http2"]["per_size"]
        largest = per[max(per, key=int)]
        add("<= 16 KiB hub memory per idle watch (HTTP/2)", largest["hub_rss_per_watch_bytes"],
            TARGETS["watch_bytes"], lambda v: v <= TARGETS["watch_bytes"])  # fmt: skip
    return targets


def _num(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}"


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        "Hub benchmark (issue 8): median [min-max] over rounds",
        "",
        f"{m['cpu_count']} x {m['cpu_model']}, kernel {m['kernel']}, Python {m['python']}, "
        f"uvloop {m['uvloop']}, aiohttp {m['aiohttp']}, {m['openssl']}; {m['date']}",
        f"interpreter {m.get('python_executable')}: calibration "
        f"{m.get('python_calibration_ms')} ms (lower is a faster build; see docs/performance.md)",
    ]
    for note in report["notes"]:
        out.append(f"note: {note}")
    if "small" in report:
        s = report["small"]
        out += [
            "",
            "| small GET, 1 KiB ConfigMap | direct | direct, impersonated "
            "| hub (front-proxy) | hub over HTTP/2 | via aggregator |",
            "|---|---|---|---|---|---|",
        ]
        paths = ("direct", "impersonated", "hub", "hub_h2", "aggregated")
        for key, label, digits in (
            ("p50_ms", "p50 at c=1, ms", 2),
            ("p99_ms", "p99 at c=1, ms", 2),
            ("added_p50_ms", "added p50 vs direct, ms", 2),
            ("added_p99_ms", "added p99 vs direct, ms", 2),
            ("added_p50_vs_impersonated_ms", "added p50 vs direct impersonated, ms", 2),
            ("hub_cpu_ms_c1", "hub CPU ms per request at c=1", 3),
            ("agent_cpu_ms_c1", "agent CPU ms per request at c=1", 3),
            ("rps_c32", "req/s at c=32", 0),
            ("hub_cpu_s_per_1000", "hub CPU s per 1,000 requests", 3),
            ("agent_cpu_s_per_1000", "agent CPU s per 1,000 requests", 3),
            ("rps_per_hub_core", "req/s per hub core", 0),
        ):
            cells = [_fmt(s[p].get(key, {}), digits=digits) if p in s else "-" for p in paths]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        out.append(
            "| req/s at c=32 vs direct | 1 | "
            + " | ".join(_fmt_ratio(s[p]["rps_vs_direct"]) if p in s else "-" for p in paths[1:])
            + " |"
        )
    if "bulk" in report:
        b = report["bulk"]
        bulk_paths = [p for p in ("tls", "ssh", "tunnel") if p in b["mbps"]["download"]]
        out += [
            "",
            f"| bulk {report['inputs']['bulk_mib']} MiB, MB/s | "
            + " | ".join(
                {"tls": "direct TLS", "ssh": "ssh -L", "tunnel": "hub + tunnel"}[p]
                for p in bulk_paths
            )
            + " | tunnel/ssh | tunnel/TLS |",
            "|---|" + "---|" * (len(bulk_paths) + 2),
        ]
        for direction in ("download", "upload"):
            ratios = b["ratios"][direction]
            out.append(
                f"| {direction} | "
                + " | ".join(_fmt(b["mbps"][direction][p]) for p in bulk_paths)
                + f" | {_fmt_ratio(ratios.get('tunnel/ssh'))}"
                + f" | {_fmt_ratio(ratios.get('tunnel/tls'))} |"
            )
        for direction, by in b.get("cpu_ms_per_mib", {}).items():
            for key, label in (("relays", "relays"), ("all", "all processes")):
                out.append(
                    f"| {direction}: CPU ms per MiB, {label} | "
                    + " | ".join(_fmt(by[p][key], digits=2) if p in by else "-" for p in bulk_paths)
                    + " | | |"
                )
        for key, stat in b["cpu"].items():
            out.append(
                f"| {key.replace('_', ' ')} (CPU ms) | {_fmt(stat, digits=2)} |"
                + " |" * (len(bulk_paths) + 1)
            )
    if "hol" in report:
        h = report["hol"]
        out += [
            "",
            f"| head-of-line ({report['inputs']['hol_clients']} clients x "
            f"{report['inputs']['hol_requests']} small GETs on the tunnel) | value |",
            "|---|---|",
            f"| p50 without / with a stalled download, ms | {_fmt(h['baseline_p50_ms'], digits=2)}"
            f" / {_fmt(h['stalled_p50_ms'], digits=2)} |",
            f"| p99 without / with a stalled download, ms | {_fmt(h['baseline_p99_ms'], digits=2)}"
            f" / {_fmt(h['stalled_p99_ms'], digits=2)} |",
            f"| added p99, ms | {_fmt(h['added_p99_ms'], digits=2)} |",
            "| hub memory held for the stalled stream, KiB (stream + socket write buffer) | "
            f"{_fmt(h['held_bytes'], KiB)} ({_fmt(h['held_stream_bytes'], KiB)} + "
            f"{_fmt(h['held_write_buffer_bytes'], KiB)}) |",
            f"| hub RSS change while stalled, KiB | {_fmt(h['stalled_fill_rss_bytes'], KiB)} |",
        ]
    if "fleet" in report:
        f = report["fleet"]
        out += [
            "",
            "| idle tunnels to one hub process | "
            + " | ".join(f"{n:,}" for n in f["sizes"])
            + " |",
            "|---|" + "---|" * len(f["sizes"]),
        ]
        per = [f["per_size"][str(n)] for n in f["sizes"]]
        out.append(
            "| hub RSS per tunnel, KiB | "
            + " | ".join(_num(p["hub_rss_per_tunnel_bytes"] / KiB) for p in per)
            + " |"
        )
        out.append(
            "| hub RSS, MiB | " + " | ".join(_num(p["hub_rss_bytes"] / MiB) for p in per) + " |"
        )
        out.append(
            "| hub CPU at idle (keepalive 15 s), % of a core | "
            + " | ".join(_num(p["keepalive_cpu_pct"], 2) for p in per)
            + " |"
        )
        out.append(
            "| seconds to connect them | "
            + " | ".join(_num(p["connect_seconds"]) for p in per)
            + " |"
        )
        sc = f["scaled"]
        out.append(
            f"| scaled: {sc['tunnels']:,} tunnels at keepalive {sc['interval_s']} s: "
            f"{_num(sc['cpu_pct'], 1)}% "
            f"of a core -> 10,000 at 15 s: {_num(sc['cpu_pct_at_15s_for_10000'], 2)}% |"
            + " |"
            * (len(f["sizes"]) - 1)
        )
    if "watch" in report:
        w = report["watch"]
        sizes = sorted(w["per_size"], key=int)
        out += [
            "",
            f"| idle watches over {w['tunnels']} tunnels | "
            + " | ".join(f"{int(n):,}" for n in sizes)
            + " |",
            "|---|" + "---|" * len(sizes),
        ]
        w2 = w["http2"]["per_size"]
        out.append(
            f"| HTTP/2 ({w['http2']['per_connection']} watches per connection): "
            "hub RSS per watch, KiB | "
            + " | ".join(_num(w2[n]["hub_rss_per_watch_bytes"] / KiB, 2) for n in sizes)
            + " |"
        )
        out.append(
            "| HTTP/2: hub RSS, MiB | "
            + " | ".join(_num(w2[n]["hub_rss_bytes"] / MiB) for n in sizes)
            + " |"
        )
        out.append(
            "| HTTP/1.1 (a connection per watch): hub RSS per watch, KiB | "
            + " | ".join(_num(w["per_size"][n]["hub_rss_per_watch_bytes"] / KiB, 2) for n in sizes)
            + " |"
        )
        out.append(
            "| HTTP/1.1: hub RSS, MiB | "
            + " | ".join(_num(w["per_size"][n]["hub_rss_bytes"] / MiB) for n in sizes)
            + " |"
        )
        for label, part in (("HTTP/2", w["http2"]), ("HTTP/1.1", w)):
            if "tracemalloc_per_watch_bytes" in part:
                out.append(
                    f"| {label}: hub Python allocations per watch (tracemalloc), KiB | "
                    + _num(part["tracemalloc_per_watch_bytes"] / KiB, 2)
                    + " |" * len(sizes)
                )
    if "trend_small" in report:
        t = report["trend_small"]
        sizes = list(t)
        out += [
            "",
            "| small GET by object size (figure 7) | "
            + " | ".join(f"{int(s) // KiB} KiB" for s in sizes)
            + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for path in ("direct", "hub"):
            out.append(
                f"| {path}: p50, ms | "
                + " | ".join(_fmt(t[s][path]["p50_ms"], digits=2) for s in sizes)
                + " |"
            )
            out.append(
                f"| {path}: req/s at c=32 | "
                + " | ".join(_fmt(t[s][path]["rps_c32"], digits=0) for s in sizes)
                + " |"
            )
        out.append(
            "| hub: added p50, ms | "
            + " | ".join(_fmt(t[s]["hub"]["added_p50_ms"], digits=2) for s in sizes)
            + " |"
        )
        out.append(
            "| hub: CPU s per 1,000 | "
            + " | ".join(_fmt(t[s]["hub"]["hub_cpu_s_per_1000"], digits=3) for s in sizes)
            + " |"
        )
    out += ["", "| target (issue 8) | value | limit | result |", "|---|---|---|---|"]
    for t in report["targets"]:
        value = t["value"]
        shown = (
            "-" if value is None else (f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}")
        )
        out.append(f"| {t['target']} | {shown} | {t['limit']:,} | {t['result']} |")
    return "\n".join(out)


# ---------------------------------------------------------------------- command line


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hub_bench", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument(
        "--tiny",
        action="store_const",
        dest="mode",
        const="tiny",
        help="smallest sizes, one round (the smoke test)",
    )
    parser.set_defaults(mode="full")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="sections: " + ",".join(SECTIONS)
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--requests", type=int, help="sequential requests per latency sample")
    parser.add_argument("--duration", type=float, help="seconds of each c=32 throughput run")
    parser.add_argument("--bulk-mib", type=float)
    parser.add_argument("--hol-clients", type=int)
    parser.add_argument("--hol-requests", type=int)
    parser.add_argument(
        "--hol-interval", type=float, help="seconds between one client's GETs (0: back to back)"
    )
    parser.add_argument("--fleet-sizes", help="idle tunnels, comma list (cumulative)")
    parser.add_argument(
        "--per-helper", type=int, default=2500, help="agent sessions per swarm process"
    )
    parser.add_argument("--keepalive-window", type=float, help="seconds of idle CPU measurement")
    parser.add_argument(
        "--scaled-keepalive", type=float, help="keepalive interval of the scaled run"
    )
    parser.add_argument("--scaled-tunnels", type=int, help="tunnels of the scaled run")
    parser.add_argument("--scaled-window", type=float, help="seconds measured in the scaled run")
    parser.add_argument("--watch-tunnels", type=int)
    parser.add_argument("--watch-sizes", help="idle watches, comma list (cumulative)")
    parser.add_argument(
        "--watches-per-connection",
        type=int,
        default=100,
        help="HTTP/2 watch figure: watches multiplexed on each connection",
    )
    parser.add_argument(
        "--trace-watches",
        action="store_true",
        help="also trace the hub's Python allocations for the watches (tracemalloc, slow)",
    )
    parser.add_argument("--object-sizes", help="ConfigMap sizes in bytes for figure 7")
    parser.add_argument("--no-ssh", action="store_true")
    parser.add_argument("--out", default="benchmarks/results/hub.json")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw)
    args.argv = raw
    for key, value in PRESETS[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [x for x in args.only.split(",") if x]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    args.fleet_sizes = _ints(args.fleet_sizes)
    args.watch_sizes = _ints(args.watch_sizes)
    args.object_sizes = _ints(args.object_sizes)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = uvloop.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = table(report)
    out.with_suffix(".md").write_text(text + f"\n\nCommand: `{report['command']}`\n")
    print(text)
    print(f"\nJSON: {out}  table: {out.with_suffix('.md')}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
