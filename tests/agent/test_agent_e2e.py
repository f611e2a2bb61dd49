"""Real processes: two ``clusternet-agent`` replicas on a kubesim child, the controller-manager
and the hub on a kubesim parent (aggregation), kubectl through the parent's aggregated path.

Register, approve (the real controller-manager), report, hold the tunnel and proxy kubectl;
then SIGKILL the leading replica: the standby takes over within the lease duration, the tunnel
comes back and kubectl works again; its dedicated ServiceAccount is deleted: it falls back to
the bootstrap token and recovers; SIGTERM ends the survivor with exit code 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from clusternet_aa.apis import labels
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim import kubeconfig as kubeconfig_files
from clusternet_aa.sandbox.kubesim import pki
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from tests.agent import world
from tests.agent.conftest import eventually
from tests.e2e import fleet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LEASE = "/apis/coordination.k8s.io/v1/namespaces/clusternet-system/leases/clusternet-agent"


@contextlib.asynccontextmanager
async def process(argv: list[str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def proxy_kubeconfig(path: Path, parent: KubesimServer, cluster_id: str, token: str) -> Path:
    server = f"{parent.url}/apis/proxies.clusternet.io/v1alpha1/sockets/{cluster_id}/proxy/direct"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "child",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(parent.ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "child", "context": {"cluster": "child", "user": "u"}}],
        "current-context": "child",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def agent_argv(parent: KubesimServer, child_kubeconfig: Path, identity: str) -> list[str]:
    return [
        str(fleet.BIN / "clusternet-agent"),
        f"--cluster-reg-parent-url={parent.url}",
        f"--cluster-reg-token={world.BOOTSTRAP_TOKEN}",
        "--cluster-reg-name=child-1",
        "--cluster-labels=region=eu-west",
        f"--kubeconfig={child_kubeconfig}",
        "--cluster-status-update-frequency=1s",
        "--cluster-status-collect-frequency=300ms",
        "--cluster-reg-retry-period=200ms",
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=250ms",
        f"--leader-elect-identity={identity}",
        "--feature-gates=SocketConnection=true",
        "-v=4",
    ]


async def test_agents_register_report_tunnel_and_fail_over(tmp_path: Path) -> None:
    state = tmp_path
    parent = KubesimServer(
        KubesimConfig(static_tokens=fleet.PARENT_TOKENS, apiservice_resync_seconds=0.5)
    )
    child = KubesimServer(KubesimConfig(static_tokens=fleet.CHILD_TOKENS, nodes=2))
    await parent.start()
    await child.start()
    try:
        async with (
            world.admin(parent) as parent_admin,
            world.admin(child) as child_admin,
            contextlib.AsyncExitStack() as stack,
        ):
            await world.prepare_parent(parent_admin)
            await world.prepare_child(child_admin)
            await fleet._apply(parent, state, "parent", fleet.PARENT_RBAC)
            await fleet._apply(child, state, "child", fleet.CHILD_RBAC)
            # the hub, behind the parent's aggregation
            hub_ca = pki.make_ca("clusternet-hub-ca")
            hub_cert = pki.issue_server_cert(
                hub_ca, ["127.0.0.1", "clusternet-hub.clusternet-system.svc"]
            )
            (state / "hub.crt").write_bytes(hub_cert.cert_pem)
            (state / "hub.key").write_bytes(hub_cert.key_pem)
            hub_kubeconfig = kubeconfig_files.write(
                state / "hub.kubeconfig", parent.kubeconfig(token="hub-token")
            )
            hub_port = fleet.free_port()
            await stack.enter_async_context(
                process(
                    [
                        str(fleet.BIN / "clusternet-hub"),
                        "--bind-address=127.0.0.1",
                        f"--secure-port={hub_port}",
                        f"--tls-cert-file={state / 'hub.crt'}",
                        f"--tls-private-key-file={state / 'hub.key'}",
                        f"--kubeconfig={hub_kubeconfig}",
                        "--shutdown-delay-duration=0",
                    ],
                    state / "hub.log",
                )
            )
            await fleet._register_hub(parent, hub_port, hub_ca.cert_pem)
            parent_admin_kubeconfig = parent.write_state(state / "parent-admin")
            await stack.enter_async_context(
                process(
                    [
                        str(fleet.BIN / "clusternet-controller-manager"),
                        f"--kubeconfig={parent_admin_kubeconfig}",
                        "--leader-elect=false",
                        "-v=4",
                    ],
                    state / "controller-manager.log",
                )
            )
            await parent.aggregation.wait_available(fleet.APISERVICE, within=20)
            child_kubeconfig = child.write_state(state / "child-admin")
            replicas = {}
            for name in ("agent-a", "agent-b"):
                replicas[name] = await stack.enter_async_context(
                    process(agent_argv(parent, child_kubeconfig, name), state / f"{name}.log")
                )

            # registered and approved: parent-cluster in the child, status in the parent
            async def registered() -> bool:
                try:
                    await child_admin.request(
                        "GET",
                        f"/api/v1/namespaces/clusternet-system/secrets/{labels.PARENT_CLUSTER_SECRET}",
                    )
                except Exception:
                    return False
                return True

            await eventually(registered, within=20)
            lease = await child_admin.request("GET", LEASE)
            cluster_id = lease["metadata"]["uid"]
            leader = lease["spec"]["holderIdentity"]
            assert leader in replicas

            async def ready() -> bool:
                return await _ready_status(parent_admin, cluster_id)

            await eventually(ready, within=20)

            # kubectl through the parent's aggregated path, the hub and the tunnel
            config = proxy_kubeconfig(state / "proxy.kubeconfig", parent, cluster_id, "admin-token")

            async def kubectl_works() -> bool:
                result = await fleet.run(
                    fleet.KUBECTL, "--kubeconfig", str(config), "get", "nodes", "-o", "name"
                )
                return result.returncode == 0 and b"node/kubesim-node-1" in result.stdout

            await eventually(kubectl_works, within=20, every=0.3)

            # the leader dies without releasing the Lease: the standby takes over
            loop = asyncio.get_running_loop()
            killed = loop.time()
            replicas[leader].kill()
            await replicas[leader].wait()
            survivor = next(name for name in replicas if name != leader)

            async def taken_over() -> bool:
                held = await child_admin.request("GET", LEASE)
                return bool(held["spec"]["holderIdentity"] == survivor)

            await eventually(taken_over, within=8, every=0.1)
            assert loop.time() - killed < 3.0 + 1.5  # lease duration plus a retry or so
            await eventually(kubectl_works, within=20, every=0.3)
            held = await child_admin.request("GET", LEASE)
            assert held["metadata"]["uid"] == cluster_id  # same cluster, no new registration
            answer = await parent_admin.request(
                "GET", "/apis/clusters.clusternet.io/v1beta1/clusterregistrationrequests"
            )
            assert len(answer["items"]) == 1

            # its dedicated ServiceAccount is deleted: 401, fallback to the bootstrap token, the
            # controller-manager issues a new token, reports and the tunnel resume
            secret_path = (
                f"/api/v1/namespaces/clusternet-system/secrets/{labels.PARENT_CLUSTER_SECRET}"
            )
            saved = await child_admin.request("GET", secret_path)
            namespace = base64.b64decode(saved["data"]["namespace"]).decode()
            accounts = await parent_admin.request(
                "GET",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                query={"labelSelector": f"{labels.CLUSTER_ID_LABEL}={cluster_id}"},
            )
            for account in accounts["items"]:
                name = account["metadata"]["name"]
                await parent_admin.request(
                    "DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
                )

            async def new_token() -> bool:
                now = await child_admin.request("GET", secret_path)
                return bool(now["data"]["token"] != saved["data"]["token"])

            await eventually(new_token, within=20, every=0.2)
            await eventually(kubectl_works, within=20, every=0.3)

            replicas[survivor].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(replicas[survivor].wait(), 10) == 0
    finally:
        await child.stop()
        await parent.stop()


async def _ready_status(parent: KubeClient, cluster_id: str) -> bool:
    answer = await parent.request(
        "GET",
        "/apis/clusters.clusternet.io/v1beta1/managedclusters",
        query={"labelSelector": f"{labels.CLUSTER_ID_LABEL}={cluster_id}"},
    )
    items = answer.get("items") or []
    if not items:
        return False
    status = items[0].get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return bool(ready and ready[0]["status"] == "True" and status.get("apiserverURL"))
