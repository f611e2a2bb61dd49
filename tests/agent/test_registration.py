"""Registration and heartbeats against a kubesim parent and child, the agent in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import pytest

from clusternet_aa.agent.identity import lease_path, resolve_cluster_id
from clusternet_aa.agent.settings import LeaderElection
from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ManagedCluster
from clusternet_aa.kube.client import KubeClient, resource_path
from tests.agent import world
from tests.agent.conftest import Clusters, eventually, running_agent

MC_PATH = resource_path(labels.CLUSTERS_GROUP, "v1beta1", "managedclusters")
PARENT_SECRET = (
    f"/api/v1/namespaces/{labels.SYSTEM_NAMESPACE}/secrets/{labels.PARENT_CLUSTER_SECRET}"
)


async def managed_cluster(parent: KubeClient, cluster_id: str) -> ManagedCluster | None:
    answer = await parent.request(
        "GET", MC_PATH, query={"labelSelector": f"{labels.CLUSTER_ID_LABEL}={cluster_id}"}
    )
    items = answer.get("items") or []
    return ManagedCluster.from_dict(items[0]) if items else None


async def test_cluster_id_is_the_lease_uid_unless_a_legacy_id_is_annotated(
    clusters: Clusters,
) -> None:
    child = clusters.child_admin
    ns = labels.SYSTEM_NAMESPACE
    cluster_id = await resolve_cluster_id(child, ns, "clusternet-agent")
    lease = await child.request("GET", lease_path(ns, "clusternet-agent"))
    assert cluster_id == lease["metadata"]["uid"]
    assert await resolve_cluster_id(child, ns, "clusternet-agent") == cluster_id  # stable
    legacy = str(uuid.uuid4())
    await child.request(
        "PATCH",
        lease_path(ns, "clusternet-agent"),
        body={"metadata": {"annotations": {labels.LEGACY_CLUSTER_ID_ANNOTATION: legacy}}},
        content_type="application/merge-patch+json",
    )
    assert await resolve_cluster_id(child, ns, "clusternet-agent") == legacy


async def test_the_request_has_clusternets_shape(clusters: Clusters) -> None:
    settings = world.agent_settings(clusters.parent, cluster_name="edge-1", sync_mode="Dual")
    async with running_agent(clusters.child, settings) as agent:

        async def created() -> bool:
            return bool(agent.cluster_id) and bool(
                (await clusters.parent_admin.request("GET", world.CRR_PATH)).get("items")
            )

        await eventually(created)
        crr = (await clusters.parent_admin.request("GET", world.CRR_PATH))["items"][0]
        lease = await clusters.child_admin.request(
            "GET", lease_path(labels.SYSTEM_NAMESPACE, "clusternet-agent")
        )
    cluster_id = lease["metadata"]["uid"]
    assert crr["metadata"]["name"] == f"clusternet-{cluster_id}"
    assert crr["metadata"]["labels"] == {
        "clusters.clusternet.io/registered-by": "clusternet-agent",
        "clusters.clusternet.io/cluster-id": cluster_id,
        "clusters.clusternet.io/cluster-name": "edge-1",
    }
    assert crr["spec"] == {
        "clusterId": cluster_id,
        "clusterName": "edge-1",
        "clusterType": "StandardCluster",
        "syncMode": "Dual",
        "clusterLabels": {"region": "eu-west"},
    }
    assert not crr.get("status")  # nobody approved it: the agent waits


async def test_register_store_credentials_and_report_a_full_status(clusters: Clusters) -> None:
    settings = world.agent_settings(clusters.parent)
    async with (
        world.running_approver(clusters.parent),
        running_agent(clusters.child, settings) as agent,
    ):
        await asyncio.wait_for(agent.serving.wait(), 10)
        assert agent.credentials is not None
        assert not agent.credentials.bootstrap
        namespace = agent.credentials.namespace
        # parent-cluster in the child, keys as Clusternet's
        secret = await clusters.child_admin.request("GET", PARENT_SECRET)
        data = {k: world.unb64(v) for k, v in secret["data"].items()}
        assert set(data) == {"ca.crt", "token", "namespace", "apiserver-advertise-url"}
        assert data["namespace"] == namespace
        assert data["apiserver-advertise-url"] == clusters.parent.url
        assert data["ca.crt"] == clusters.parent.ca_pem.decode()
        assert (
            secret["metadata"]["labels"][labels.CLUSTER_BOOTSTRAPPING_LABEL] == "credentials-auto"
        )
        assert secret["metadata"]["labels"][labels.CLUSTER_ID_LABEL] == agent.cluster_id

        async def reported() -> bool:
            mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
            return mc is not None and bool(mc.status.k8s_version)

        await eventually(reported)
        first = await managed_cluster(clusters.parent_admin, agent.cluster_id)
        assert first is not None
        status = first.status
        assert status.k8s_version == "v1.37.0"
        assert status.platform
        assert status.agent_version.startswith("v")
        assert status.apiserver_url == clusters.child.url
        assert status.healthz
        assert status.livez
        assert status.readyz
        assert status.node_statistics.ready_nodes == 3
        assert status.capacity == {"cpu": "12", "memory": "24Gi"}
        assert status.allocatable == {"cpu": "12", "memory": "24Gi"}
        assert status.heartbeat_frequency_seconds == 1
        assert status.use_socket is True
        assert status.app_pusher is False
        assert status.last_observed_time is not None
        ready = status.condition("Ready")
        assert ready is not None
        assert ready.status == "True"
        assert ready.reason == "ManagedClusterReady"
        # refreshed: the heartbeat moves on
        first_seen = status.last_observed_time

        async def refreshed() -> bool:
            later = await managed_cluster(clusters.parent_admin, agent.cluster_id)
            seen = later.status.last_observed_time if later is not None else None
            return seen is not None and seen > first_seen

        await eventually(refreshed, within=5)
        # child-cluster-deployer in the dedicated namespace of the parent
        deployer = await clusters.parent_admin.request(
            "GET", f"/api/v1/namespaces/{namespace}/secrets/child-cluster-deployer"
        )
        assert set(deployer["data"]) == {
            "ca.crt",
            "token",
            "service-account.name",
            "service-account.uid",
            "apiserver-advertise-url",
        }
        assert world.unb64(deployer["data"]["service-account.name"]) == "clusternet-app-deployer"
        assert world.unb64(deployer["data"]["apiserver-advertise-url"]) == clusters.child.url
        assert deployer["metadata"]["finalizers"] == ["apps.clusternet.io/finalizer"]
        assert deployer["metadata"]["annotations"] == {"clusternet.io/autoupdate": "true"}


async def test_node_labels_are_aggregated_onto_the_managed_cluster(clusters: Clusters) -> None:
    for index in (1, 2, 3):
        await clusters.child_admin.request(
            "PATCH",
            f"/api/v1/nodes/kubesim-node-{index}",
            body={"metadata": {"labels": {"node.clusternet.io/gpu": "true"}}},
            content_type="application/merge-patch+json",
        )
    settings = world.agent_settings(clusters.parent)
    async with (
        world.running_approver(clusters.parent),
        running_agent(clusters.child, settings) as agent,
    ):
        await asyncio.wait_for(agent.serving.wait(), 10)

        async def labelled() -> bool:
            mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
            return mc is not None and mc.metadata.labels.get("node.clusternet.io/gpu") == "true"

        await eventually(labelled)
        mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
        assert mc is not None
        assert mc.metadata.labels["region"] == "eu-west"
        # a label that falls below the threshold goes away, other labels stay
        await clusters.child_admin.request(
            "PATCH",
            "/api/v1/nodes/kubesim-node-1",
            body={"metadata": {"labels": {"node.clusternet.io/gpu": None}}},
            content_type="application/merge-patch+json",
        )

        async def unlabelled() -> bool:
            mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
            return mc is not None and "node.clusternet.io/gpu" not in mc.metadata.labels

        await eventually(unlabelled)
        mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
        assert mc is not None
        assert mc.metadata.labels["region"] == "eu-west"


async def test_restart_reuses_the_saved_credentials(clusters: Clusters) -> None:
    settings = world.agent_settings(clusters.parent)
    async with world.running_approver(clusters.parent) as approver:
        async with running_agent(clusters.child, settings) as agent:
            await asyncio.wait_for(agent.serving.wait(), 10)
            first = agent.credentials
        assert len(approver.approved) == 1
    # No approver, no bootstrap token any more: only the saved credentials can work.
    await clusters.parent_admin.request(
        "DELETE", f"/api/v1/namespaces/kube-system/secrets/bootstrap-token-{world.TOKEN_ID}"
    )
    async with running_agent(clusters.child, settings) as again:
        await asyncio.wait_for(again.serving.wait(), 10)
        assert again.credentials == first
        assert again.registrar is not None
        assert again.registrar.requests_created == 0


async def test_deleted_service_account_falls_back_to_bootstrap_and_recovers(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clusternet_aa")
    settings = world.agent_settings(clusters.parent)
    async with (
        world.running_approver(clusters.parent) as approver,
        running_agent(clusters.child, settings) as agent,
    ):
        await asyncio.wait_for(agent.serving.wait(), 10)
        old = agent.credentials
        assert old is not None
        accounts = await clusters.parent_admin.request(
            "GET", f"/api/v1/namespaces/{old.namespace}/serviceaccounts"
        )
        for account in accounts["items"]:
            if account["metadata"]["name"].startswith("clusternet-"):
                await clusters.parent_admin.request(
                    "DELETE",
                    f"/api/v1/namespaces/{old.namespace}/serviceaccounts/{account['metadata']['name']}",
                )

        async def recovered() -> bool:
            now = agent.credentials
            return (
                now is not None
                and now.token != old.token
                and agent.serving.is_set()
                and agent.reporter is not None
                and agent.reporter.reports > 0
            )

        await eventually(recovered, within=15)
        assert approver.reissued == [agent.cluster_id]
        secret = await clusters.child_admin.request("GET", PARENT_SECRET)
        assert world.unb64(secret["data"]["token"]) != old.token
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) <= 3, [r.getMessage() for r in errors_logged]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_changed_parent_url_registers_with_the_bootstrap_token(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clusternet_aa")
    async with world.running_approver(clusters.parent):
        async with running_agent(clusters.child, world.agent_settings(clusters.parent)) as agent:
            await asyncio.wait_for(agent.serving.wait(), 10)
        moved = clusters.parent.url.replace("127.0.0.1", "localhost")
        settings = world.agent_settings(clusters.parent, parent_url=moved)
        async with running_agent(clusters.child, settings) as again:
            await asyncio.wait_for(again.serving.wait(), 10)
            assert again.credentials is not None
            assert again.credentials.parent_url == moved
    assert any("parent URL changed" in r.getMessage() for r in caplog.records)
    secret = await clusters.child_admin.request("GET", PARENT_SECRET)
    assert world.unb64(secret["data"]["apiserver-advertise-url"]) == moved


async def test_bootstrap_token_without_rights_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="clusternet_aa")
    from clusternet_aa.sandbox.kubesim.testing import running_kubesim

    async with (
        running_kubesim() as parent,
        running_kubesim(world.child_config()) as child,
        world.admin(parent) as parent_admin,
        world.admin(child) as child_admin,
    ):
        await world.prepare_parent(parent_admin, bootstrap_rbac=False)
        await world.prepare_child(child_admin)
        settings = world.agent_settings(parent, registration_retry_period=0.05)
        async with world.running_approver(parent), running_agent(child, settings) as agent:
            await asyncio.sleep(1.0)
            assert not agent.serving.is_set()
            await world.apply_rbac(parent_admin, world.BOOTSTRAP_RBAC)
            await asyncio.wait_for(agent.serving.wait(), 15)
    errors_logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1, errors_logged
    assert "clusternet:system:bootstrapping" in errors_logged[0]
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)


async def test_unreachable_parent_logs_once_retries_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="clusternet_aa")
    from clusternet_aa.sandbox.kubesim.testing import running_kubesim
    from tests.e2e.fleet import free_port

    port = free_port()
    url = f"https://127.0.0.1:{port}"
    async with running_kubesim(world.child_config()) as child, world.admin(child) as child_admin:
        await world.prepare_child(child_admin)
        settings = world.agent_settings(url, registration_retry_period=0.05)
        async with running_agent(child, settings) as agent:
            await asyncio.sleep(1.0)
            attempts = [r for r in caplog.records if "unreachable" in r.getMessage()]
            assert len(attempts) >= 3  # it keeps trying (repeats at debug level)
            async with (
                running_kubesim(world.with_port(world.child_config(), port)) as parent,
                world.admin(parent) as parent_admin,
            ):
                await world.prepare_parent(parent_admin)
                async with world.running_approver(parent):
                    await asyncio.wait_for(agent.serving.wait(), 15)
    # (the parent came up before its bootstrap token existed: a 401 is a cause of its own)
    unreachable = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and "unreachable" in r.getMessage()
    ]
    assert len(unreachable) == 1, unreachable
    assert not any(r.exc_info for r in caplog.records)


async def test_deleted_managed_cluster_logs_once_and_resumes(
    clusters: Clusters, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clusternet_aa")
    settings = world.agent_settings(clusters.parent)
    async with (
        world.running_approver(clusters.parent) as approver,
        running_agent(clusters.child, settings) as agent,
    ):
        await asyncio.wait_for(agent.serving.wait(), 10)
        assert agent.reporter is not None
        assert agent.credentials is not None
        await eventually(lambda: _reports(agent, 1))
        mc = await managed_cluster(clusters.parent_admin, agent.cluster_id)
        assert mc is not None
        ns = agent.credentials.namespace
        path = resource_path(labels.CLUSTERS_GROUP, "v1beta1", "managedclusters", namespace=ns)
        await clusters.parent_admin.request("DELETE", f"{path}/{mc.name}")
        await asyncio.sleep(1.5)
        missing = [r for r in caplog.records if "no ManagedCluster" in r.getMessage()]
        assert len(missing) == 1
        assert missing[0].levelno == logging.ERROR
        before = agent.reporter.reports
        crr = (await clusters.parent_admin.request("GET", world.CRR_PATH))["items"][0]
        await approver.create_managed_cluster(ns, crr["spec"])
        await eventually(lambda: _reports(agent, before + 1))
        again = await managed_cluster(clusters.parent_admin, agent.cluster_id)
        assert again is not None
        assert again.status.k8s_version
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def _reports(agent: object, at_least: int) -> bool:
    reporter = getattr(agent, "reporter", None)
    return reporter is not None and reporter.reports >= at_least


async def test_two_clusters_register_at_once(clusters: Clusters) -> None:
    from clusternet_aa.sandbox.kubesim.testing import running_kubesim

    async with running_kubesim(world.child_config()) as other, world.admin(other) as other_admin:
        await world.prepare_child(other_admin)
        async with (
            world.running_approver(clusters.parent) as approver,
            running_agent(clusters.child, world.agent_settings(clusters.parent)) as one,
            running_agent(other, world.agent_settings(clusters.parent)) as two,
        ):
            await asyncio.wait_for(asyncio.gather(one.serving.wait(), two.serving.wait()), 15)
            assert one.cluster_id != two.cluster_id
            assert one.credentials is not None
            assert two.credentials is not None
            assert one.credentials.namespace != two.credentials.namespace
            assert sorted(approver.approved) == sorted([one.cluster_id, two.cluster_id])
            await eventually(lambda: _reports(one, 1))
            await eventually(lambda: _reports(two, 1))


async def test_leader_failover_between_two_replicas(clusters: Clusters) -> None:
    election = LeaderElection(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)
    settings = world.agent_settings(clusters.parent, leader_election=election)
    async with world.running_approver(clusters.parent), contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            running_agent(clusters.child, settings, identity="replica-a")
        )
        await asyncio.wait_for(first.serving.wait(), 10)
        async with running_agent(clusters.child, settings, identity="replica-b") as second:
            await asyncio.sleep(0.5)
            assert not second.serving.is_set()  # only the leader works
            cluster_id = first.cluster_id
            loop = asyncio.get_running_loop()
            stopped = loop.time()
            await stack.aclose()  # the leader stops (and releases the Lease)
            await asyncio.wait_for(second.serving.wait(), election.lease_duration + 1)
            assert loop.time() - stopped < election.lease_duration
            assert second.cluster_id == cluster_id
            assert second.registrar is not None
            assert second.registrar.requests_created == 0
