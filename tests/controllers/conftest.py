"""Fixtures for controller tests: kubesim with Clusternet's CRDs applied through its API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusternet_aa.apis import labels
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim

CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"
CRRS = "/apis/clusters.clusternet.io/v1beta1/clusterregistrationrequests"
MCS = "/apis/clusters.clusternet.io/v1beta1/managedclusters"

Obj = dict[str, Any]


async def apply_crds(kube: KubeClient) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                await kube.request(
                    "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=doc
                )


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    with contextlib.suppress(errors.APIConflict):
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": name}})


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[KubesimServer]:
    async with running_kubesim(state_dir=tmp_path / "parent") as server:
        yield server


@pytest.fixture
async def kube(sim: KubesimServer) -> AsyncIterator[KubeClient]:
    async with api_client(sim) as api:
        client = KubeClient(api)
        await apply_crds(client)
        await ensure_namespace(client, labels.SYSTEM_NAMESPACE)
        await sim.settle()
        yield client


@contextlib.asynccontextmanager
async def token_client(sim: KubesimServer, token: str) -> AsyncIterator[KubeClient]:
    async with api_client(sim, token=token) as api:
        yield KubeClient(api)


@contextlib.asynccontextmanager
async def running(coro_fn: Callable[[], Awaitable[None]]) -> AsyncIterator[asyncio.Task[None]]:
    """Run a controller's ``run`` in a task; cancel it afterwards."""
    task: asyncio.Task[None] = asyncio.ensure_future(coro_fn())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(
    probe: Callable[[], Awaitable[Any]], *, within: float = 10.0, interval: float = 0.05
) -> Any:
    """Retry ``probe`` until it returns something truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {last!r})")
        await asyncio.sleep(interval)


def crr_body(
    cluster_id: str,
    *,
    name: str | None = None,
    cluster_name: str = "",
    cluster_labels: dict[str, str] | None = None,
    namespace: str = "",
    sync_mode: str = "Dual",
) -> Obj:
    spec: Obj = {"clusterId": cluster_id, "clusterType": "StandardCluster", "syncMode": sync_mode}
    if cluster_name:
        spec["clusterName"] = cluster_name
    if cluster_labels:
        spec["clusterLabels"] = cluster_labels
    if namespace:
        spec["clusterNamespace"] = namespace
    meta_labels = {
        labels.REGISTERED_BY_LABEL: labels.CLUSTERNET_AGENT,
        labels.CLUSTER_ID_LABEL: cluster_id,
    }
    if cluster_name:
        meta_labels[labels.CLUSTER_NAME_LABEL] = cluster_name
    return {
        "apiVersion": "clusters.clusternet.io/v1beta1",
        "kind": "ClusterRegistrationRequest",
        "metadata": {"name": name or labels.registration_name(cluster_id), "labels": meta_labels},
        "spec": spec,
    }
