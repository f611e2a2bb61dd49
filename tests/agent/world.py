"""A kubesim parent and children for agent tests, plus a stand-in registration approver.

The parent gets Clusternet's CRDs, the bootstrap RBAC of ``deploy/hub`` and a bootstrap token
Secret; a child gets the agent namespace and the ``clusternet-app-deployer`` ServiceAccount with
its token Secret. :class:`StandInApprover` does what the controller-manager's ``crrapprover``
does (reference §2.4), by polling: dedicated namespace, ManagedCluster, ServiceAccount and
token Secret, ClusterRole and binding ``clusternet-<id>``, Role and binding in the namespace,
then the CRR status. It also re-issues the token of an Approved request whose ServiceAccount
was deleted (so the agent's fallback to the bootstrap token can recover).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from clusternet_aa.agent.settings import AgentSettings, LeaderElection
from clusternet_aa.apis import labels
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient, resource_path
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client
from tests.apis import crdgen

logger = logging.getLogger(__name__)

TOKEN_ID = "abcdef"
TOKEN_SECRET = "0123456789abcdef"
BOOTSTRAP_TOKEN = f"{TOKEN_ID}.{TOKEN_SECRET}"
BOOTSTRAP_GROUP = "system:bootstrappers:clusternet:register-cluster-token"
CRR_PATH = resource_path(labels.CLUSTERS_GROUP, "v1beta1", "clusterregistrationrequests")
SA_TOKEN = "kubernetes.io/service-account-token"


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


async def create(kube: KubeClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return await kube.request("POST", path, body=body)
    except errors.APIConflict:
        name = body["metadata"]["name"]
        return await kube.request("GET", f"{path}/{name}")


BOOTSTRAP_RBAC = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "clusternet:system:bootstrapping"},
        "rules": [
            {
                "apiGroups": ["clusters.clusternet.io"],
                "resources": ["clusterregistrationrequests"],
                "verbs": ["get", "create"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "clusternet:system:bootstrapping"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "clusternet:system:bootstrapping",
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP}
        ],
    },
]


def bootstrap_token_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"bootstrap-token-{TOKEN_ID}", "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "token-id": b64(TOKEN_ID),
            "token-secret": b64(TOKEN_SECRET),
            "usage-bootstrap-authentication": b64("true"),
            "auth-extra-groups": b64(BOOTSTRAP_GROUP),
        },
    }


async def apply_rbac(kube: KubeClient, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        plural = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
        await create(kube, resource_path("rbac.authorization.k8s.io", "v1", plural), obj)


async def prepare_parent(kube: KubeClient, *, bootstrap_rbac: bool = True) -> None:
    for path in sorted(crdgen.CRD_DIR.glob("clusters.clusternet.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        await create(
            kube, resource_path("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd
        )
    for _ in range(200):
        try:
            await kube.request("GET", CRR_PATH)
            await kube.request(
                "GET", resource_path(labels.CLUSTERS_GROUP, "v1beta1", "managedclusters")
            )
            break
        except errors.APINotFound:
            await asyncio.sleep(0.02)
    await create(kube, "/api/v1/namespaces/kube-system/secrets", bootstrap_token_secret())
    if bootstrap_rbac:
        await apply_rbac(kube, BOOTSTRAP_RBAC)


async def prepare_child(kube: KubeClient, namespace: str = labels.SYSTEM_NAMESPACE) -> None:
    await create(kube, "/api/v1/namespaces", {"metadata": {"name": namespace}})
    name = labels.APP_DEPLOYER_SERVICE_ACCOUNT
    await create(
        kube, f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}}
    )
    await create(
        kube,
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {
                "name": name,
                "annotations": {"kubernetes.io/service-account.name": name},
            },
            "type": SA_TOKEN,
        },
    )


def agent_settings(parent: KubesimServer | str, **overrides: Any) -> AgentSettings:
    """Short frequencies for tests."""
    values: dict[str, Any] = {
        "parent_url": parent if isinstance(parent, str) else parent.url,
        "bootstrap_token": BOOTSTRAP_TOKEN,
        "status_update_frequency": 0.5,
        "status_collect_frequency": 0.2,
        "registration_retry_period": 0.2,
        "leader_election": LeaderElection(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2),
        "cluster_labels": {"region": "eu-west"},
    }
    values.update(overrides)
    return AgentSettings(**values)


@dataclass
class StandInApprover:
    """The controller-manager's crrapprover, by polling (see the module docstring)."""

    kube: KubeClient
    ca_pem: bytes
    period: float = 0.05
    approved: list[str] = field(default_factory=list)
    reissued: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                answer = await self.kube.request("GET", CRR_PATH)
                for crr in answer.get("items") or []:
                    result = (crr.get("status") or {}).get("result")
                    if not result:
                        await self.approve(crr)
                    elif result == "Approved":
                        await self.check(crr)
            except errors.KubeError as exc:
                logger.info("stand-in approver: %s", exc)
            await asyncio.sleep(self.period)

    async def _find(self, path: str, cluster_id: str) -> dict[str, Any] | None:
        selector = f"{labels.CLUSTER_ID_LABEL}={cluster_id}"
        items = (await self.kube.request("GET", path, query={"labelSelector": selector})).get(
            "items"
        ) or []
        return items[0] if items else None

    def _labels(self, cluster_id: str, name: str) -> dict[str, str]:
        return {
            labels.OBJECT_CREATED_BY_LABEL: labels.CLUSTERNET_AGENT,
            labels.CLUSTER_ID_LABEL: cluster_id,
            labels.CLUSTER_NAME_LABEL: name,
        }

    async def _service_account(self, namespace: str, cluster_id: str, name: str) -> str:
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        account = await self._find(path, cluster_id)
        if account is None:
            account = await self.kube.request(
                "POST",
                path,
                body={
                    "metadata": {
                        "generateName": "clusternet-",
                        "labels": self._labels(cluster_id, name),
                    }
                },
            )
        sa_name = str(account["metadata"]["name"])
        await create(
            self.kube,
            f"/api/v1/namespaces/{namespace}/secrets",
            {
                "metadata": {
                    "name": sa_name,
                    "annotations": {"kubernetes.io/service-account.name": sa_name},
                },
                "type": SA_TOKEN,
            },
        )
        return sa_name

    async def _token(self, namespace: str, sa_name: str) -> str:
        for _ in range(200):
            secret = await self.kube.request(
                "GET", f"/api/v1/namespaces/{namespace}/secrets/{sa_name}"
            )
            data = secret.get("data") or {}
            if data.get("token") and data.get("ca.crt"):
                return str(data["token"])
            await asyncio.sleep(0.02)
        raise AssertionError("the token controller never filled the secret")

    async def approve(self, crr: dict[str, Any]) -> None:
        spec = crr["spec"]
        cluster_id, name = spec["clusterId"], spec["clusterName"]
        if crr["metadata"]["name"] != labels.registration_name(cluster_id):
            crr["status"] = {"result": "Denied", "errorMessage": "name does not match the id"}
            await self.kube.request("PUT", f"{CRR_PATH}/{crr['metadata']['name']}/status", body=crr)
            return
        ns = await self._find("/api/v1/namespaces", cluster_id)
        if ns is None:
            meta: dict[str, Any] = {"labels": self._labels(cluster_id, name)}
            if spec.get("clusterNamespace"):
                meta["name"] = spec["clusterNamespace"]
            else:
                meta["generateName"] = "clusternet-"
            ns = await self.kube.request("POST", "/api/v1/namespaces", body={"metadata": meta})
        namespace = str(ns["metadata"]["name"])
        mc_path = resource_path(
            labels.CLUSTERS_GROUP, "v1beta1", "managedclusters", namespace=namespace
        )
        if await self._find(mc_path, cluster_id) is None:
            await self.create_managed_cluster(namespace, spec)
        sa_name = await self._service_account(namespace, cluster_id, name)
        rbac = "rbac.authorization.k8s.io"
        registration = labels.registration_name(cluster_id)
        subject = [{"kind": "ServiceAccount", "name": sa_name, "namespace": namespace}]
        await create(
            self.kube,
            resource_path(rbac, "v1", "clusterroles"),
            {
                "metadata": {"name": registration},
                "rules": [
                    {
                        "apiGroups": [labels.CLUSTERS_GROUP],
                        "resources": ["clusterregistrationrequests"],
                        "verbs": ["create", "get"],
                    },
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                    {
                        "apiGroups": [labels.PROXIES_GROUP],
                        "resources": ["sockets"],
                        "resourceNames": [cluster_id],
                        "verbs": ["*"],
                    },
                ],
            },
        )
        binding = {
            "metadata": {"name": registration},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": registration},
            "subjects": subject,
        }
        await self._put_binding(resource_path(rbac, "v1", "clusterrolebindings"), binding)
        await create(
            self.kube,
            resource_path(rbac, "v1", "roles", namespace=namespace),
            {
                "metadata": {"name": labels.MANAGED_CLUSTER_ROLE},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            },
        )
        await self._put_binding(
            resource_path(rbac, "v1", "rolebindings", namespace=namespace),
            {
                "metadata": {"name": labels.MANAGED_CLUSTER_ROLE},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": labels.MANAGED_CLUSTER_ROLE},
                "subjects": subject,
            },
        )
        token = await self._token(namespace, sa_name)
        crr["status"] = {
            "result": "Approved",
            "dedicatedNamespace": namespace,
            "managedClusterName": name,
            "token": token,
            "caCertificate": b64(self.ca_pem),
        }
        await self.kube.request("PUT", f"{CRR_PATH}/{crr['metadata']['name']}/status", body=crr)
        self.approved.append(cluster_id)

    async def _put_binding(self, path: str, body: dict[str, Any]) -> None:
        try:
            await self.kube.request("POST", path, body=body)
        except errors.APIConflict:
            current = await self.kube.request("GET", f"{path}/{body['metadata']['name']}")
            await self.kube.request(
                "PUT",
                f"{path}/{body['metadata']['name']}",
                body={**current, "subjects": body["subjects"]},
            )

    async def create_managed_cluster(self, namespace: str, spec: dict[str, Any]) -> None:
        cluster_id, name = spec["clusterId"], spec["clusterName"]
        mc_path = resource_path(
            labels.CLUSTERS_GROUP, "v1beta1", "managedclusters", namespace=namespace
        )
        await self.kube.request(
            "POST",
            mc_path,
            body={
                "apiVersion": "clusters.clusternet.io/v1beta1",
                "kind": "ManagedCluster",
                "metadata": {
                    "name": name,
                    "labels": {
                        **self._labels(cluster_id, name),
                        **(spec.get("clusterLabels") or {}),
                    },
                },
                "spec": {
                    "clusterId": cluster_id,
                    "clusterType": spec.get("clusterType") or "StandardCluster",
                    "syncMode": spec.get("syncMode") or "Pull",
                },
            },
        )

    async def check(self, crr: dict[str, Any]) -> None:
        """Re-issue the token of an Approved request whose ServiceAccount is gone."""
        status = crr["status"]
        namespace = status.get("dedicatedNamespace")
        cluster_id = crr["spec"]["clusterId"]
        if not namespace:
            return
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        if await self._find(path, cluster_id) is not None:
            return
        crr["status"] = {}
        await self.kube.request("PUT", f"{CRR_PATH}/{crr['metadata']['name']}/status", body=crr)
        self.reissued.append(cluster_id)
        await self.approve(await self.kube.request("GET", f"{CRR_PATH}/{crr['metadata']['name']}"))


@contextlib.asynccontextmanager
async def admin(server: KubesimServer) -> AsyncIterator[KubeClient]:
    async with api_client(server) as api:
        yield KubeClient(api)


@contextlib.asynccontextmanager
async def running_approver(parent: KubesimServer) -> AsyncIterator[StandInApprover]:
    async with admin(parent) as kube:
        approver = StandInApprover(kube, parent.ca_pem)
        task = asyncio.ensure_future(approver.run())
        try:
            yield approver
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def child_config() -> KubesimConfig:
    return KubesimConfig(nodes=3)


def with_port(config: KubesimConfig, port: int) -> KubesimConfig:
    return replace(config, port=port)
