"""SIGKILL ``clusternet-controller-manager`` (a real process) again and again in the middle of
approving registrations, then start it once more: it must converge with exactly one dedicated
namespace, one ManagedCluster and one ServiceAccount per cluster, and every request Approved
with the objects that exist.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from clusternet_aa.apis import labels
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim
from tests.controllers.conftest import CRRS, apply_crds, crr_body, ensure_namespace
from tests.e2e import fleet
from tests.reliability import harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTERS = harness.scaled(100, 40)
#: Kill after this many steps (a namespace, ManagedCluster or ServiceAccount created, or a
#: request approved) each round.
KILL_AFTER = (1, 2, 5, 3, 8, 1, 13, 2)
SELECTOR = f"{labels.OBJECT_CREATED_BY_LABEL}={labels.CLUSTERNET_AGENT}"


def _cluster_id(i: int) -> str:
    return f"7e1ab1e0-0000-4000-8000-{i:012d}"


async def _objects(kube: KubeClient) -> dict[str, Counter[str]]:
    """Per kind, how many labelled objects each cluster id has."""
    paths = {
        "namespaces": "/api/v1/namespaces",
        "managedclusters": "/apis/clusters.clusternet.io/v1beta1/managedclusters",
        "serviceaccounts": "/api/v1/serviceaccounts",
    }
    result: dict[str, Counter[str]] = {}
    for kind, path in paths.items():
        answer = await kube.request("GET", path, query={"labelSelector": SELECTOR})
        result[kind] = Counter(
            item["metadata"]["labels"][labels.CLUSTER_ID_LABEL] for item in answer["items"]
        )
    return result


async def _progress(kube: KubeClient) -> int:
    """Objects created plus requests approved: grows with every step of an approval."""
    objects = await _objects(kube)
    return sum(sum(c.values()) for c in objects.values()) + len(await _approved(kube))


async def _approved(kube: KubeClient) -> dict[str, dict[str, str]]:
    answer = await kube.request("GET", CRRS)
    return {
        item["spec"]["clusterId"]: item["status"]
        for item in answer["items"]
        if (item.get("status") or {}).get("result") == "Approved"
    }


def _start(kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(fleet.BIN / "clusternet-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "-v=4",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
        )


@pytest.mark.timeout(120)
async def test_killed_mid_approval_it_converges_without_duplicates(tmp_path: Path) -> None:
    server: KubesimServer
    async with (
        running_kubesim(state_dir=tmp_path / "parent") as server,
        api_client(server) as api,
    ):
        kube = KubeClient(api)
        await apply_crds(kube)
        await ensure_namespace(kube, labels.SYSTEM_NAMESPACE)
        await server.settle()
        assert server.config.state_dir is not None
        kubeconfig = server.config.state_dir / "admin.kubeconfig"
        ids = [_cluster_id(i) for i in range(CLUSTERS)]
        for cid in ids:
            await kube.request("POST", CRRS, body=crr_body(cid, cluster_name=f"c-{cid[-4:]}"))
        log = tmp_path / "controller-manager.log"
        kills: list[dict[str, int]] = []
        process: subprocess.Popen[bytes] | None = None
        try:
            for threshold in KILL_AFTER:
                made = await _progress(kube)
                if len(await _approved(kube)) == len(ids):
                    break
                process = _start(kubeconfig, log)

                async def progressed(made: int = made, threshold: int = threshold) -> bool:
                    done = len(await _approved(kube)) == len(ids)
                    return done or await _progress(kube) >= made + threshold

                await harness.eventually(progressed, within=30, every=0.005)
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                after = await _objects(kube)
                kills.append(
                    {
                        "objects": sum(sum(c.values()) for c in after.values()),
                        "approved": len(await _approved(kube)),
                    }
                )
            mid_approval = [k for k in kills if k["objects"] > 0 and k["approved"] < len(ids)]
            assert mid_approval, kills  # at least one kill landed in the middle
            process = _start(kubeconfig, log)

            async def converged() -> bool:
                return len(await _approved(kube)) == len(ids)

            took = await harness.eventually(converged, within=60, every=0.1)
            await asyncio.sleep(1.0)  # nothing more gets created afterwards
        finally:
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        objects = await _objects(kube)
        approved = await _approved(kube)
        harness.report(
            "controller-manager restart",
            clusters=len(ids),
            kills=kills,
            converged_after_last_start_s=round(took, 2),
            objects={kind: sum(c.values()) for kind, c in objects.items()},
        )
        for kind, counts in objects.items():
            duplicates = {cid: n for cid, n in counts.items() if n != 1}
            assert not duplicates, f"{kind}: {duplicates}"
            assert set(counts) == set(ids), kind
        answer = await kube.request("GET", "/api/v1/namespaces", query={"labelSelector": SELECTOR})
        namespace_of = {
            item["metadata"]["labels"][labels.CLUSTER_ID_LABEL]: item["metadata"]["name"]
            for item in answer["items"]
        }
        for cid in ids:
            assert approved[cid]["dedicatedNamespace"] == namespace_of[cid]
            assert approved[cid]["token"]
