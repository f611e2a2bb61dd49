"""The kube layer: errors, the list+watch informer (bookmarks, 410 relist, backoff), and the
ClusterDirectory built on it, against kubesim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from clusternet_aa.apiserver.clusters import CLUSTER_ID_LABEL, ClusterDirectory
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.informers import Backoff, Informer, ResourceRef
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.watching import WatchSettings

CONFIGMAPS_A = ResourceRef("", "v1", "configmaps", "ns-a")


@pytest.fixture
async def small_sim(tmp_path: Path) -> AsyncIterator[KubesimServer]:
    config = KubesimConfig(history=5, watch=WatchSettings(bookmark_interval=0.1))
    async with running_kubesim(config) as server:
        yield server


@pytest.fixture
async def kube(small_sim: KubesimServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(small_sim.write_state(tmp_path / "sim"))
    for namespace in ("ns-a", "ns-b"):
        await client.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    yield client
    await client.close()


async def _cm(kube: KubeClient, namespace: str, name: str, value: str = "1") -> None:
    await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        body={"metadata": {"name": name, "labels": {"test": "yes"}}, "data": {"v": value}},
    )


async def _eventually(check, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "never happened"
        await asyncio.sleep(0.02)


async def test_errors_carry_the_status(kube: KubeClient) -> None:
    with pytest.raises(errors.APINotFound) as missing:
        await kube.request("GET", "/api/v1/namespaces/ns-a/configmaps/nope")
    assert missing.value.reason == "NotFound"
    assert missing.value.message == 'configmaps "nope" not found'
    await _cm(kube, "ns-a", "dup")
    with pytest.raises(errors.APIConflict):
        await _cm(kube, "ns-a", "dup")
    assert isinstance(errors.from_response(503, b"plain text"), errors.APIServerError)
    gone = errors.from_status({"kind": "Status", "code": 410, "reason": "Expired"})
    assert isinstance(gone, errors.APIGone)
    configuration = client.Configuration(host="https://127.0.0.1:1")
    async with KubeClient(client.ApiClient(configuration)) as dead:
        with pytest.raises(errors.APITransportError):
            await dead.request("GET", "/api")


async def test_list_then_watch_events(kube: KubeClient) -> None:
    await _cm(kube, "ns-a", "before")
    seen: list[tuple[str, str]] = []
    informer = Informer(
        kube,
        CONFIGMAPS_A,
        label_selector="test",  # not kube-root-ca.crt, which every namespace gets
        on_event=lambda k, o: seen.append((k, o["metadata"]["name"])),
    )
    informer.start()
    try:
        assert await informer.wait_synced(5)
        assert seen == [("ADDED", "before")]
        assert informer.get("before", "ns-a")["kind"] == "ConfigMap"  # list items get a kind
        await _cm(kube, "ns-a", "after")
        await _cm(kube, "ns-b", "elsewhere")
        await kube.request(
            "PATCH",
            "/api/v1/namespaces/ns-a/configmaps/before",
            body={"data": {"v": "2"}},
            content_type="application/merge-patch+json",
        )
        await kube.request("DELETE", "/api/v1/namespaces/ns-a/configmaps/after")
        await _eventually(lambda: len(seen) == 4)
        assert seen[1:] == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]
        assert set(informer.store) == {("ns-a", "before")}
    finally:
        await informer.stop()


async def test_bookmarks_let_a_quiet_watch_resume_without_relisting(kube: KubeClient) -> None:
    informer = Informer(kube, CONFIGMAPS_A, label_selector="test")
    informer.start()
    assert await informer.wait_synced(5)
    listed_at = informer._resource_version
    for i in range(8):  # more than the server keeps (history=5), none of them ours
        await _cm(kube, "ns-b", f"noise-{i}")
    await _eventually(lambda: int(informer._resource_version) > int(listed_at) + 5)
    await informer.stop()
    informer.start()  # resume from the bookmarked version
    await asyncio.sleep(0.3)
    await informer.stop()
    assert informer.list_count == 1
    assert informer.last_error is None


async def test_expired_version_relists_and_reports_the_difference(kube: KubeClient) -> None:
    for name in ("keep", "change", "drop"):
        await _cm(kube, "ns-a", name)
    seen: list[tuple[str, str]] = []
    informer = Informer(
        kube,
        CONFIGMAPS_A,
        label_selector="test",  # not kube-root-ca.crt, which every namespace gets
        on_event=lambda k, o: seen.append((k, o["metadata"]["name"])),
    )
    informer.start()
    assert await informer.wait_synced(5)
    await informer.stop()  # disconnected while the world moves on past the history window
    seen.clear()
    await kube.request("DELETE", "/api/v1/namespaces/ns-a/configmaps/drop")
    await kube.request(
        "PUT",
        "/api/v1/namespaces/ns-a/configmaps/change",
        body={"metadata": {"name": "change", "labels": {"test": "yes"}}, "data": {"v": "2"}},
    )
    await _cm(kube, "ns-a", "new")
    for i in range(6):
        await _cm(kube, "ns-b", f"noise-{i}")
    informer.start()
    try:
        await _eventually(lambda: informer.list_count == 2)
        await _eventually(lambda: len(seen) == 3)
        assert sorted(seen) == [("ADDED", "new"), ("DELETED", "drop"), ("MODIFIED", "change")]
        assert {name for _, name in informer.store} == {"keep", "change", "new"}
    finally:
        await informer.stop()


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(initial=1, maximum=8, factor=2, jitter=0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    jittered = Backoff(initial=1, maximum=8, jitter=0.5)
    assert all(1 <= jittered.delay(1) <= 1.5 for _ in range(50))


MC_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "managedclusters.clusters.clusternet.io"},
    "spec": {
        "group": "clusters.clusternet.io",
        "scope": "Namespaced",
        "names": {
            "plural": "managedclusters",
            "singular": "managedcluster",
            "kind": "ManagedCluster",
            "listKind": "ManagedClusterList",
            "shortNames": ["mcls"],
            "categories": ["clusternet"],
        },
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


async def test_cluster_directory_waits_for_the_crd(kube: KubeClient) -> None:
    directory = ClusterDirectory(kube, backoff=Backoff(initial=0.05, maximum=0.2))
    directory.start()
    try:
        await asyncio.sleep(0.3)
        assert directory.is_known("c1") is None  # no CRD yet: cannot tell
        assert isinstance(directory.informer.last_error, errors.APINotFound)
        await kube.request(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=MC_CRD
        )
        await _eventually(lambda: directory.is_known("c1") is False, within=10)
        path = "/apis/clusters.clusternet.io/v1beta1/namespaces/ns-a/managedclusters"
        await kube.request(
            "POST",
            path,
            body={
                "apiVersion": "clusters.clusternet.io/v1beta1",
                "kind": "ManagedCluster",
                "metadata": {"name": "one", "labels": {CLUSTER_ID_LABEL: "c1"}},
                "spec": {"clusterId": "c1", "syncMode": "Pull"},
            },
        )
        await _eventually(lambda: directory.is_known("c1") is True)
        assert directory.is_known("c2") is False
        await kube.request(
            "PATCH",
            f"{path}/one/status",
            body={"status": {"apiserverURL": "https://10.0.0.1:6443"}},
            content_type="application/merge-patch+json",
        )
        await _eventually(lambda: directory.apiserver_url("c1") == "https://10.0.0.1:6443")
        await kube.request("DELETE", f"{path}/one")
        await _eventually(lambda: directory.is_known("c1") is False)
    finally:
        await directory.stop()
