"""Cluster lifecycle against kubesim: missed heartbeats -> Ready=Unknown + taint, and back."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ManagedCluster
from clusternet_aa.apis.meta import Condition, Taint, format_time
from clusternet_aa.controllers.lifecycle import (
    ClusterLifecycle,
    LifecycleSettings,
    desired_taints,
)
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient
from tests.controllers.conftest import ensure_namespace, eventually, running

NS = "clusternet-abcde"
CLUSTER_ID = "3f1c2a9e-5d2b-4c1e-9b7a-0a1b2c3d4e5f"
PATH = f"/apis/clusters.clusternet.io/v1beta1/namespaces/{NS}/managedclusters"
UNSCHEDULABLE = labels.TAINT_CLUSTER_UNSCHEDULABLE

Obj = dict[str, Any]


async def create_cluster(kube: KubeClient, name: str, taints: list[Obj] | None = None) -> None:
    await ensure_namespace(kube, NS)
    spec: Obj = {"clusterId": CLUSTER_ID, "syncMode": "Pull"}
    if taints:
        spec["taints"] = taints
    await kube.request(
        "POST",
        PATH,
        body={
            "apiVersion": "clusters.clusternet.io/v1beta1",
            "kind": "ManagedCluster",
            "metadata": {"name": name, "labels": {labels.CLUSTER_ID_LABEL: CLUSTER_ID}},
            "spec": spec,
        },
    )


async def heartbeat(kube: KubeClient, name: str, frequency: int = 1) -> None:
    """What the agent's status report writes: fresh time, healthy, Ready=True."""
    while True:
        current = await kube.request("GET", f"{PATH}/{name}")
        now = format_time(dt.datetime.now(dt.UTC))
        current["status"] = {
            "lastObservedTime": now,
            "heartbeatFrequencySeconds": frequency,
            "healthz": True,
            "livez": True,
            "readyz": True,
            "predictorDirectAccess": False,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ManagedClusterReady",
                    "message": "managed cluster is ready.",
                    "lastTransitionTime": now,
                }
            ],
        }
        try:
            await kube.request("PUT", f"{PATH}/{name}/status", body=current)
            return
        except errors.APIConflict:
            continue


@contextlib.asynccontextmanager
async def agent(kube: KubeClient, name: str, period: float = 0.3) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            await heartbeat(kube, name)
            await asyncio.sleep(period)

    await heartbeat(kube, name)
    async with running(loop):
        yield


async def get(kube: KubeClient, name: str) -> ManagedCluster:
    return ManagedCluster.from_dict(await kube.request("GET", f"{PATH}/{name}"))


def unschedulable(cluster: ManagedCluster) -> Taint | None:
    return next((t for t in cluster.spec.taints if t.key == UNSCHEDULABLE), None)


async def test_missed_heartbeats_make_a_cluster_unknown_and_tainted_then_it_recovers(
    kube: KubeClient,
) -> None:
    await create_cluster(
        kube, "edge", taints=[{"key": "team", "value": "a", "effect": "NoSchedule"}]
    )
    controller = ClusterLifecycle(kube)  # Clusternet's 3 missed heartbeats
    loop = asyncio.get_running_loop()
    async with running(controller.run):
        async with agent(kube, "edge"):
            await asyncio.sleep(1.0)
            healthy = await get(kube, "edge")
            assert healthy.ready
            assert unschedulable(healthy) is None
        stopped_at = loop.time()

        async def unknown() -> ManagedCluster | None:
            cluster = await get(kube, "edge")
            ready = cluster.status.condition("Ready")
            return (
                cluster if ready and ready.status == "Unknown" and unschedulable(cluster) else None
            )

        lost: ManagedCluster = await eventually(unknown, within=6)
        took = loop.time() - stopped_at
        assert 1.5 < took < 4.5  # about 3 heartbeats of 1 s (lastObservedTime has 1 s precision)
        ready = lost.status.condition("Ready")
        assert ready is not None
        assert ready.reason == "ClusterStatusUnknown"
        assert (lost.status.healthz, lost.status.livez, lost.status.readyz) == (False, False, False)
        taint = unschedulable(lost)
        assert taint == Taint(key=UNSCHEDULABLE, value="ClusterStatusUnknown", effect="NoSchedule")
        assert any(t.key == "team" for t in lost.spec.taints)  # other taints kept

        # no polling: a stale, already marked cluster is not reconciled again and again
        calls = 0
        original = controller.reconcile

        async def counting(key: str) -> None:
            nonlocal calls
            calls += 1
            await original(key)

        controller.reconcile = counting  # type: ignore[method-assign]
        await asyncio.sleep(1.0)
        assert calls <= 2

        # heartbeats resume: Ready again, taint gone, other taints kept
        async with agent(kube, "edge"):

            async def recovered() -> ManagedCluster | None:
                cluster = await get(kube, "edge")
                return cluster if cluster.ready and unschedulable(cluster) is None else None

            back: ManagedCluster = await eventually(recovered, within=5)
        assert [t.key for t in back.spec.taints] == ["team"]


async def test_a_cluster_that_never_reported_goes_unknown(kube: KubeClient) -> None:
    await create_cluster(kube, "silent")
    settings = LifecycleSettings(default_heartbeat_seconds=0.5, grace_multiplier=2.0)
    async with running(ClusterLifecycle(kube, settings).run):

        async def unknown() -> ManagedCluster | None:
            cluster = await get(kube, "silent")
            return cluster if unschedulable(cluster) else None

        cluster: ManagedCluster = await eventually(unknown, within=5)
    ready = cluster.status.condition("Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("Unknown", "ClusterStatusNeverUpdated")
    assert unschedulable(cluster) == Taint(
        key=UNSCHEDULABLE, value="ClusterStatusNeverUpdated", effect="NoSchedule"
    )


async def test_a_not_ready_report_taints_at_once(kube: KubeClient) -> None:
    await create_cluster(kube, "sick")
    async with running(ClusterLifecycle(kube).run):
        await heartbeat(kube, "sick", frequency=60)
        current = await kube.request("GET", f"{PATH}/sick")
        current["status"]["conditions"][0].update(status="False", reason="ManagedClusterNotReady")
        await kube.request("PUT", f"{PATH}/sick/status", body=current)

        async def tainted() -> ManagedCluster | None:
            cluster = await get(kube, "sick")
            return cluster if unschedulable(cluster) else None

        cluster: ManagedCluster = await eventually(tainted, within=3)
    taint = unschedulable(cluster)
    assert taint is not None
    assert taint.value == "ManagedClusterNotReady"
    ready = cluster.status.condition("Ready")
    assert ready is not None
    assert ready.status == "False"  # a fresh report is not overridden


def test_desired_taints_follow_the_ready_condition() -> None:
    other = Taint(key="x", value="y", effect="NoExecute")
    unknown = Condition(type="Ready", status="Unknown", reason="ClusterStatusUnknown")
    ready = Condition(type="Ready", status="True", reason="ManagedClusterReady")
    added = desired_taints([other], unknown)
    assert added == [
        other,
        Taint(key=UNSCHEDULABLE, value="ClusterStatusUnknown", effect="NoSchedule"),
    ]
    assert desired_taints(added, unknown) == added
    assert desired_taints(added, ready) == [other]
    assert desired_taints([other], None) == [other]
