"""kubectl-clusternet, found by real kubectl on PATH, against kubesim with Clusternet's CRDs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml

from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.manifests.kubectl_runner import BIN, KUBECTL, MANIFESTS, Kubectl

pytestmark = [
    pytest.mark.skipif(
        not (KUBECTL.exists() and (BIN / "kubectl-clusternet").exists()),
        reason="kubectl or the plugin is not installed in the venv",
    ),
    # One parent for the module (starting kubesim and applying the CRDs is the slow part).
    pytest.mark.asyncio(loop_scope="module"),
]

ID1 = "5e1f0c1e-7c55-4b2e-9d0a-0000000000c1"
ID2 = "5e1f0c1e-7c55-4b2e-9d0a-0000000000c2"
PROXY = "/apis/proxies.clusternet.io/v1alpha1/sockets/{}/proxy/direct"


def managed_cluster(name: str, namespace: str, cluster_id: str) -> dict[str, object]:
    return {
        "apiVersion": "clusters.clusternet.io/v1beta1",
        "kind": "ManagedCluster",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"clusters.clusternet.io/cluster-id": cluster_id},
        },
        "spec": {"clusterId": cluster_id, "clusterType": "StandardCluster", "syncMode": "Pull"},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def parent(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Kubectl]:
    tmp_path = tmp_path_factory.mktemp("plugin")
    home = tmp_path / "home"
    home.mkdir()
    async with running_kubesim(KubesimConfig(nodes=0), state_dir=tmp_path / "parent") as sim:
        kubectl = Kubectl(tmp_path / "parent" / "admin.kubeconfig", home)
        await kubectl.run("apply", "-k", str(MANIFESTS / "crds"))
        await kubectl.run("create", "namespace", "clusternet-a1b2c")
        await kubectl.run("create", "namespace", "clusternet-d3f4g")
        objs = [
            managed_cluster("child-1", "clusternet-a1b2c", ID1),
            managed_cluster("child-2", "clusternet-d3f4g", ID2),
        ]
        await kubectl.run(
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": objs}),
        )
        status = {
            "status": {
                "k8sVersion": "v1.37.0",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "ManagedClusterReady",
                        "message": "ok",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
        }
        await kubectl.run(
            "patch", "mcls", "child-1", "-n", "clusternet-a1b2c", "--subresource=status",
            "--type=merge", "-p", json.dumps(status),
        )  # fmt: skip
        kubectl.server = sim.url  # type: ignore[attr-defined]
        yield kubectl


async def test_get_clusters_lists_managed_clusters_with_their_tunnel(parent: Kubectl) -> None:
    _, out, _ = await parent.run("clusternet", "get", "clusters")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ID", "KUBERNETES", "READY", "TUNNEL"]
    assert [r.split() for r in rows] == [
        ["child-1", ID1, "v1.37.0", "True", "NoHub"],
        ["child-2", ID2, "<unknown>", "Unknown", "NoHub"],
    ]
    _, wide, _ = await parent.run("clusternet", "get", "clusters", "-o", "wide", "--no-probe")
    assert wide.splitlines()[1].split() == [
        "clusternet-a1b2c", "child-1", ID1, "v1.37.0", "True", "-", "Pull",
    ]  # fmt: skip
    _, names, _ = await parent.run(
        "clusternet", "-n", "clusternet-d3f4g", "get", "clusters", "-o", "name"
    )
    assert names == "child-2\n"
    _, as_json, _ = await parent.run("clusternet", "get", "clusters", "-o", "json", "--no-probe")
    assert [c["cluster_id"] for c in json.loads(as_json)] == [ID1, ID2]


async def test_kubeconfig_prints_a_context_through_the_hub(parent: Kubectl) -> None:
    _, out, _ = await parent.run("clusternet", "kubeconfig", "child-1")
    document = yaml.safe_load(out)
    assert document["current-context"] == "child-1"
    (cluster,) = document["clusters"]
    server = parent.server  # type: ignore[attr-defined]
    assert cluster["cluster"]["server"] == server + PROXY.format(ID1)
    assert cluster["cluster"]["certificate-authority-data"]
    (context,) = document["contexts"]
    (user,) = document["users"]
    assert context["context"]["user"] == user["name"]
    assert user["user"]["token"]  # the current user's own credentials
    # By id and by namespace/name too.
    _, by_id, _ = await parent.run("clusternet", "kubeconfig", ID2, "--context-name", "c2")
    assert PROXY.format(ID2) in by_id
    _, by_ns, _ = await parent.run("clusternet", "kubeconfig", "clusternet-d3f4g/child-2")
    assert PROXY.format(ID2) in by_ns


async def test_kubeconfig_merge_adds_a_context_and_switches(
    shared: Kubectl, tmp_path: Path
) -> None:
    # A copy of the kubeconfig: this test switches its context.
    copy = tmp_path / "kubeconfig"
    copy.write_text(shared.kubeconfig.read_text())
    parent = Kubectl(copy, shared.home)
    parent.server = shared.server  # type: ignore[attr-defined]
    before = yaml.safe_load(parent.kubeconfig.read_text())
    _, out, _ = await parent.run("clusternet", "kubeconfig", "child-1", "--merge")
    assert out == f'context "child-1" created in {parent.kubeconfig}\n'
    after = yaml.safe_load(parent.kubeconfig.read_text())
    assert after["current-context"] == before["current-context"]
    assert {c["name"] for c in after["contexts"]} == {
        *(c["name"] for c in before["contexts"]),
        "child-1",
    }
    assert parent.kubeconfig.stat().st_mode & 0o777 == 0o600
    _, out, _ = await parent.run("clusternet", "kubeconfig", "child-1", "--merge", "--switch")
    assert "unchanged" in out
    _, current, _ = await parent.run("config", "current-context")
    assert current.strip() == "child-1"
    _, server, _ = await parent.run(
        "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"
    )
    assert server.endswith(PROXY.format(ID1))
    # --context picks the parent again after the switch.
    code, _, err = await parent.run("clusternet", "get", "clusters", check=False)
    assert code == 1  # the child context has no ManagedClusters API: one clear line
    assert err.count("\n") == 1
    assert err.startswith("error: ")
    context = before["current-context"]
    await parent.run("clusternet", "--context", context, "get", "clusters", "--no-probe")


async def test_cluster_passthrough_runs_kubectl_in_the_child_context(parent: Kubectl) -> None:
    # -n is the child's namespace.
    _, out, _ = await parent.run(
        "clusternet", "--cluster", "child-1", "-n", "kube-system", "--",
        "create", "configmap", "x", "--dry-run=client", "-o", "jsonpath={.metadata.namespace}",
    )  # fmt: skip
    assert out == "kube-system"
    # Requests go to the hub's path on the parent; without a hub the parent answers 404 and the
    # exit code is kubectl's.
    code, _, err = await parent.run(
        "clusternet", "--cluster", "child-1", "--", "get", "pods", "-v=6", check=False
    )
    assert code == 1
    server = parent.server  # type: ignore[attr-defined]
    assert f'verb="GET" url="{server}{PROXY.format(ID1)}/api' in err
    assert "the server could not find the requested resource" in err


async def test_errors_are_one_line(parent: Kubectl) -> None:
    for args, message in [
        (("kubeconfig", "nope"), 'error: no ManagedCluster named "nope"'),
        (("--cluster", "child-1"), "error: usage: kubectl clusternet --cluster NAME --"),
        (("get", "clusters", "--", "x"), "error: arguments after -- need --cluster NAME"),
        (("kubeconfig", "child-1", "--switch"), "error: --switch needs --merge"),
    ]:
        code, out, err = await parent.run("clusternet", *args, check=False)
        assert code == 1, args
        assert out == ""
        assert err.startswith(message), err
        assert err.count("\n") == 1, err


@pytest.fixture
def shared(parent: Kubectl) -> Kubectl:
    return parent


async def test_no_crds_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    async with running_kubesim(KubesimConfig(nodes=0), state_dir=tmp_path / "bare"):
        kubectl = Kubectl(tmp_path / "bare" / "admin.kubeconfig", home)
        code, _, err = await kubectl.run("clusternet", "get", "clusters", check=False)
        assert code == 1
        assert "are Clusternet's CRDs installed" in err
        code, _, err = await kubectl.run(
            "clusternet", "--kubeconfig", str(tmp_path / "missing"), "get", "clusters", check=False
        )
        assert code == 1
        assert err.startswith("error: ")


async def test_json_logs_one_object_per_line(parent: Kubectl) -> None:
    _, _, err = await parent.run("clusternet", "-v", "1", "--log-format", "json", "get", "clusters")
    lines = [json.loads(line) for line in err.splitlines()]
    probes = [line for line in lines if line["msg"] == "tunnel probe"]
    assert {p["cluster"] for p in probes} == {"child-1", "child-2"}
    assert all(p["state"] == "NoHub" and p["level"] == "info" for p in probes)
