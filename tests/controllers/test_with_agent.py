"""The controllers with the real agent (in-process) on kubesim parent and child clusters:
register, approve, heartbeats, agent gone -> Ready=Unknown and the taint, agent back -> Ready."""

from __future__ import annotations

from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ClusterRegistrationRequest, ManagedCluster
from clusternet_aa.controllers.lifecycle import ClusterLifecycle
from clusternet_aa.controllers.registration import RegistrationApprover
from tests.agent import conftest as agent_fixtures
from tests.agent import world
from tests.agent.conftest import Clusters, running_agent
from tests.controllers.conftest import CRRS, MCS, eventually, running

#: The agent tests' fixture: a kubesim parent (CRDs, bootstrap token) and child.
clusters = agent_fixtures.clusters


async def test_agent_registers_reports_goes_unknown_and_recovers(clusters: Clusters) -> None:
    parent = clusters.parent_admin
    settings = world.agent_settings(clusters.parent, status_update_frequency=1.0)
    approver = RegistrationApprover(parent)
    lifecycle = ClusterLifecycle(parent)

    async def managed_cluster() -> ManagedCluster | None:
        items = (await parent.request("GET", MCS))["items"]
        return ManagedCluster.from_dict(items[0]) if items else None

    def taint(cluster: ManagedCluster) -> bool:
        return any(t.key == labels.TAINT_CLUSTER_UNSCHEDULABLE for t in cluster.spec.taints)

    async with running(approver.run), running(lifecycle.run):
        async with running_agent(clusters.child, settings) as agent:

            async def ready() -> ManagedCluster | None:
                cluster = await managed_cluster()
                return cluster if cluster is not None and cluster.ready else None

            cluster: ManagedCluster = await eventually(ready, within=15)
            assert cluster.spec.cluster_id == agent.cluster_id
            assert cluster.metadata.labels["region"] == "eu-west"
            crr = ClusterRegistrationRequest.from_dict(
                await parent.request("GET", f"{CRRS}/clusternet-{agent.cluster_id}")
            )
            assert crr.status.result == "Approved"

        async def lost() -> ManagedCluster | None:
            cluster = await managed_cluster()
            condition = cluster.status.condition("Ready") if cluster else None
            ok = cluster and condition and condition.status == "Unknown" and taint(cluster)
            return cluster if ok else None

        gone: ManagedCluster = await eventually(lost, within=10)
        assert not gone.status.healthz

        async with running_agent(clusters.child, settings):

            async def back() -> ManagedCluster | None:
                cluster = await managed_cluster()
                return cluster if cluster and cluster.ready and not taint(cluster) else None

            await eventually(back, within=15)
        again = ClusterRegistrationRequest.from_dict(
            await parent.request("GET", f"{CRRS}/clusternet-{crr.spec.cluster_id}")
        )
        assert again.status.token == crr.status.token  # nothing re-issued
    assert len((await parent.request("GET", MCS))["items"]) == 1
