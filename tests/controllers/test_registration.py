"""The CRR approver against kubesim: objects, status, credentials that work, idempotence."""

from __future__ import annotations

import asyncio
from typing import Any

from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ClusterRegistrationRequest
from clusternet_aa.controllers.registration import ApproverSettings, RegistrationApprover
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.controllers.conftest import CRRS, MCS, crr_body, eventually, running, token_client

ID1 = "3f1c2a9e-5d2b-4c1e-9b7a-0a1b2c3d4e51"
ID2 = "3f1c2a9e-5d2b-4c1e-9b7a-0a1b2c3d4e52"
ID3 = "3f1c2a9e-5d2b-4c1e-9b7a-0a1b2c3d4e53"

Obj = dict[str, Any]


async def decided(kube: KubeClient, name: str) -> ClusterRegistrationRequest:
    async def probe() -> ClusterRegistrationRequest | None:
        crr = ClusterRegistrationRequest.from_dict(await kube.request("GET", f"{CRRS}/{name}"))
        return crr if crr.status.result else None

    result: ClusterRegistrationRequest = await eventually(probe)
    return result


async def by_cluster(kube: KubeClient, path: str, cluster_id: str) -> list[Obj]:
    answer = await kube.request(
        "GET", path, query={"labelSelector": f"{labels.CLUSTER_ID_LABEL}={cluster_id}"}
    )
    return list(answer["items"])


async def can(kube: KubeClient, verb: str, name: str) -> bool:
    review = await kube.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "group": labels.PROXIES_GROUP,
                    "resource": "sockets",
                    "name": name,
                    "verb": verb,
                }
            },
        },
    )
    return bool(review["status"].get("allowed"))


async def test_a_crr_is_approved_with_everything_in_place(
    sim: KubesimServer, kube: KubeClient
) -> None:
    approver = RegistrationApprover(kube)
    await kube.request(
        "POST",
        CRRS,
        body=crr_body(ID1, cluster_name="edge-1", cluster_labels={"region": "eu-west"}),
    )
    async with running(approver.run):
        crr = await decided(kube, f"clusternet-{ID1}")
    status = crr.status
    assert status.result == "Approved"
    assert status.error_message == ""
    assert status.managed_cluster_name == "edge-1"
    ns = status.dedicated_namespace
    assert ns.startswith("clusternet-")
    assert len(ns) == len("clusternet-") + 5
    assert status.ca_certificate == sim.ca_pem
    assert status.token
    # wire format: base64 []byte fields
    raw = await kube.request("GET", f"{CRRS}/clusternet-{ID1}")
    assert raw["status"]["caCertificate"] != sim.ca_pem.decode()

    namespace = await kube.request("GET", f"/api/v1/namespaces/{ns}")
    assert (
        namespace["metadata"]["labels"].items()
        >= {
            labels.OBJECT_CREATED_BY_LABEL: labels.CLUSTERNET_AGENT,
            labels.CLUSTER_ID_LABEL: ID1,
            labels.CLUSTER_NAME_LABEL: "edge-1",
        }.items()
    )
    mc = await kube.request(
        "GET", f"/apis/clusters.clusternet.io/v1beta1/namespaces/{ns}/managedclusters/edge-1"
    )
    assert mc["spec"] == {"clusterId": ID1, "clusterType": "StandardCluster", "syncMode": "Dual"}
    assert mc["metadata"]["labels"]["region"] == "eu-west"
    assert mc["metadata"]["labels"][labels.CLUSTER_ID_LABEL] == ID1
    assert mc["metadata"]["labels"][labels.CLUSTER_NAME_LABEL] == "edge-1"

    sas = await by_cluster(kube, f"/api/v1/namespaces/{ns}/serviceaccounts", ID1)
    assert len(sas) == 1
    sa_name = sas[0]["metadata"]["name"]
    secret = await kube.request("GET", f"/api/v1/namespaces/{ns}/secrets/{sa_name}")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa_name

    role = await kube.request(
        "GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/clusternet-{ID1}"
    )
    socket_rules = [r for r in role["rules"] if "sockets" in r["resources"]]
    assert socket_rules == [
        {"apiGroups": ["proxies.clusternet.io"], "resources": ["sockets"],
         "resourceNames": [ID1], "verbs": ["*"]}
    ]  # fmt: skip
    assert role["metadata"]["labels"][labels.CLUSTER_BOOTSTRAPPING_LABEL] == "rbac-defaults"
    binding = await kube.request(
        "GET", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/clusternet-{ID1}"
    )
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}]
    ns_role = await kube.request(
        "GET",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/clusternet-managedcluster-role",
    )
    assert ns_role["rules"] == [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    await kube.request(
        "GET",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/clusternet-managedcluster-role",
    )

    # the token works: it authenticates, holds the tunnel verb on its own socket only
    async with token_client(sim, status.token.decode()) as agent:
        assert await can(agent, "create", ID1)
        assert await can(agent, "get", ID1)
        assert not await can(agent, "create", ID2)
        assert not await can(agent, "get", ID2)
        # and it can write its ManagedCluster status in the dedicated namespace
        await agent.request(
            "GET", f"/apis/clusters.clusternet.io/v1beta1/namespaces/{ns}/managedclusters/edge-1"
        )
        await agent.request("GET", f"{CRRS}/clusternet-{ID1}")


async def test_a_name_id_mismatch_is_denied_with_a_message(kube: KubeClient) -> None:
    await kube.request("POST", CRRS, body=crr_body(ID1, name=f"clusternet-{ID2}"))
    async with running(RegistrationApprover(kube).run):
        crr = await decided(kube, f"clusternet-{ID2}")
    assert crr.status.result == "Denied"
    assert ID2 in crr.status.error_message
    assert "clusterId" in crr.status.error_message
    assert crr.status.token == b""
    assert crr.status.dedicated_namespace == ""
    assert await by_cluster(kube, "/api/v1/namespaces", ID1) == []
    assert await by_cluster(kube, MCS, ID1) == []


async def test_re_registration_reuses_namespace_cluster_and_account(kube: KubeClient) -> None:
    await kube.request("POST", CRRS, body=crr_body(ID1, cluster_name="c1"))
    async with running(RegistrationApprover(kube).run):
        first = await decided(kube, f"clusternet-{ID1}")
    # the agent registers again (the CRR was deleted and re-created)
    await kube.request("DELETE", f"{CRRS}/clusternet-{ID1}")
    await kube.request("POST", CRRS, body=crr_body(ID1, cluster_name="c1"))
    async with running(RegistrationApprover(kube).run):
        second = await decided(kube, f"clusternet-{ID1}")
    assert second.status.dedicated_namespace == first.status.dedicated_namespace
    assert second.status.managed_cluster_name == first.status.managed_cluster_name
    assert second.status.token == first.status.token
    assert len(await by_cluster(kube, "/api/v1/namespaces", ID1)) == 1
    assert len(await by_cluster(kube, MCS, ID1)) == 1
    assert len(await by_cluster(kube, "/api/v1/serviceaccounts", ID1)) == 1


async def test_two_registrations_at_once_both_get_complete_credentials(
    sim: KubesimServer, kube: KubeClient
) -> None:
    async with running(RegistrationApprover(kube, ApproverSettings(workers=4)).run):
        await asyncio.gather(
            kube.request("POST", CRRS, body=crr_body(ID1, cluster_name="a")),
            kube.request("POST", CRRS, body=crr_body(ID2, cluster_name="b")),
        )
        one, two = await asyncio.gather(
            decided(kube, f"clusternet-{ID1}"), decided(kube, f"clusternet-{ID2}")
        )
    for crr, mine, other in ((one, ID1, ID2), (two, ID2, ID1)):
        assert crr.status.result == "Approved"
        assert crr.status.token
        assert crr.status.ca_certificate == sim.ca_pem
        async with token_client(sim, crr.status.token.decode()) as agent:
            assert await can(agent, "create", mine)
            assert not await can(agent, "create", other)
    assert one.status.dedicated_namespace != two.status.dedicated_namespace


async def test_explicit_namespace_is_used(kube: KubeClient) -> None:
    await kube.request("POST", CRRS, body=crr_body(ID3, cluster_name="c3", namespace="team-c3"))
    async with running(RegistrationApprover(kube).run):
        crr = await decided(kube, f"clusternet-{ID3}")
    assert crr.status.dedicated_namespace == "team-c3"


async def test_restart_in_the_middle_converges_without_duplicates(kube: KubeClient) -> None:
    """Stop the approver after it created some objects, then run a fresh one."""
    await kube.request("POST", CRRS, body=crr_body(ID1, cluster_name="mid"))
    first = RegistrationApprover(kube)
    created = asyncio.Event()
    original = first._ensure_service_account

    async def stop_after_account(crr: Any, namespace: str) -> str:
        name = await original(crr, namespace)
        created.set()
        await asyncio.Event().wait()  # "crash" here: no secret, RBAC or status yet
        return name

    first._ensure_service_account = stop_after_account  # type: ignore[method-assign]
    async with running(first.run):
        await asyncio.wait_for(created.wait(), 10)
    crr = ClusterRegistrationRequest.from_dict(
        await kube.request("GET", f"{CRRS}/clusternet-{ID1}")
    )
    assert crr.status.result is None
    # two fresh controller-managers at once, for good measure
    async with running(RegistrationApprover(kube).run), running(RegistrationApprover(kube).run):
        crr = await decided(kube, f"clusternet-{ID1}")
    assert crr.status.result == "Approved"
    assert len(await by_cluster(kube, "/api/v1/namespaces", ID1)) == 1
    assert len(await by_cluster(kube, MCS, ID1)) == 1
    assert len(await by_cluster(kube, "/api/v1/serviceaccounts", ID1)) == 1


async def test_a_deleted_service_account_is_recreated_and_the_status_refreshed(
    sim: KubesimServer, kube: KubeClient
) -> None:
    await kube.request("POST", CRRS, body=crr_body(ID1, cluster_name="c1"))
    async with running(RegistrationApprover(kube).run):
        first = await decided(kube, f"clusternet-{ID1}")
        ns = first.status.dedicated_namespace
        (sa,) = await by_cluster(kube, f"/api/v1/namespaces/{ns}/serviceaccounts", ID1)
        await kube.request(
            "DELETE", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa['metadata']['name']}"
        )

        async def new_token() -> ClusterRegistrationRequest | None:
            crr = ClusterRegistrationRequest.from_dict(
                await kube.request("GET", f"{CRRS}/clusternet-{ID1}")
            )
            return crr if crr.status.token not in (b"", first.status.token) else None

        second: ClusterRegistrationRequest = await eventually(new_token)
    assert second.status.dedicated_namespace == ns
    async with token_client(sim, second.status.token.decode()) as agent:
        assert await can(agent, "create", ID1)
