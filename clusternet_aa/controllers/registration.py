"""``crrapprover``: approve ClusterRegistrationRequests automatically (reference §2.4).

For a CRR named ``clusternet-<spec.clusterId>`` the approver makes sure that these exist, in
this order, each found first by its labels (``clusternet.io/created-by=clusternet-agent`` and
``clusters.clusternet.io/cluster-id=<id>``) so that a re-registering cluster, a second worker or
a restarted controller-manager reuses what is there instead of creating a duplicate:

1. the dedicated namespace (``spec.clusterNamespace``, else generateName ``clusternet-``);
2. the ManagedCluster (name ``spec.clusterName``), labelled, plus ``spec.clusterLabels``;
3. a ServiceAccount (generateName ``clusternet-``) and its token Secret of the same name
   (``kubernetes.io/service-account-token``);
4. ClusterRole and ClusterRoleBinding ``clusternet-<id>``: ``create,get`` on CRRs, ``get`` on
   secrets and (gate SocketConnection) ``*`` on ``sockets`` limited to resourceName ``<id>``;
5. Role and RoleBinding ``clusternet-managedcluster-role`` in the dedicated namespace (all of it);

then waits until the token controller has filled ``token`` and ``ca.crt`` and writes the status:
``Approved``, ``dedicatedNamespace``, ``managedClusterName``, ``token``, ``caCertificate``.
A name/id mismatch is ``Denied`` with an ``errorMessage`` and nothing is created.

Lookups are live LISTs, not informer caches: a cache may not show an object created a moment
ago, and that would create a second namespace. Approved CRRs are reconciled too (at start and
when one of their objects is deleted): a deleted ServiceAccount is re-created and the status
gets the new token, so an agent falling back to its bootstrap token finds working credentials.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any

from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import (
    ApprovedResult,
    ClusterRegistrationRequest,
    ClusterRegistrationRequestStatus,
    ClusterType,
    SyncMode,
)
from clusternet_aa.apis.meta import ModelError
from clusternet_aa.controllers.base import Controller, PermanentError, TemporaryError
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient, resource_path
from clusternet_aa.kube.informers import EventType, Informer, ResourceRef

__all__ = ["ApproverSettings", "RegistrationApprover"]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

CRRS = ResourceRef(labels.CLUSTERS_GROUP, "v1beta1", "clusterregistrationrequests")
MANAGED_CLUSTERS = ResourceRef(labels.CLUSTERS_GROUP, "v1beta1", "managedclusters")
SA_TOKEN_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True, kw_only=True)
class ApproverSettings:
    """Switches of the approver."""

    #: Grant ``sockets/<id>`` (the controller-manager's SocketConnection gate).
    socket_connection: bool = True
    #: Taint new clusters ``initialization=ClusterInitWaiting:NoSchedule`` (gate ClusterInit).
    cluster_init: bool = False
    #: Seconds between checks of a token Secret the token controller has not filled yet
    #: (besides the Secret watch, which normally brings the key back first).
    token_wait: float = 1.0
    #: Concurrent reconciles (Clusternet's ``--threadiness``).
    workers: int = 2


def _decode_data(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        return b""
    return base64.b64decode(value)


class RegistrationApprover(Controller):
    name = "crrapprover"

    def __init__(self, kube: KubeClient, settings: ApproverSettings | None = None) -> None:
        self.kube = kube
        self.settings = settings or ApproverSettings()
        self.crrs = Informer(kube, CRRS, on_event=self.on_event)
        selector = labels.CLUSTER_ID_LABEL
        # objects of a registration: their changes (deletions, a filled token) bring the CRR back
        watched = [
            Informer(kube, ResourceRef("", "v1", "secrets"), label_selector=selector),
            Informer(kube, ResourceRef("", "v1", "serviceaccounts"), label_selector=selector),
            Informer(kube, ResourceRef("", "v1", "namespaces"), label_selector=selector),
            Informer(kube, MANAGED_CLUSTERS, label_selector=selector),
        ]
        for informer in watched:
            informer.handlers.append(self._on_owned_event)
        super().__init__([self.crrs, *watched], workers=self.settings.workers)

    def _on_owned_event(self, kind: EventType, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        cluster_id = (meta.get("labels") or {}).get(labels.CLUSTER_ID_LABEL)
        if not cluster_id:
            return
        if kind != "DELETED" and obj.get("kind", "Secret") != "Secret":
            return  # only deletions matter, and Secrets being filled
        name = labels.registration_name(cluster_id)
        if self.crrs.get(name) is not None:
            self.enqueue(name)

    # -- reconcile -----------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        obj = self.crrs.get(key)
        if obj is None:
            return
        try:
            crr = ClusterRegistrationRequest.from_dict(obj)
        except ModelError as exc:
            raise PermanentError(f"malformed ClusterRegistrationRequest: {exc}") from exc
        if crr.metadata.deletion_timestamp is not None:
            return
        if crr.status.result in (ApprovedResult.DENIED, ApprovedResult.FAILED):
            return
        cluster_id = crr.spec.cluster_id
        expected = labels.registration_name(cluster_id)
        if not cluster_id or crr.name != expected:
            await self._write_status(
                crr.name,
                ClusterRegistrationRequestStatus(
                    result=ApprovedResult.DENIED,
                    error_message=(
                        f"ClusterRegistrationRequest {crr.name!r} is denied: its name must be "
                        f"{expected!r} (clusternet-<spec.clusterId>)"
                    ),
                ),
            )
            logger.warning("denied ClusterRegistrationRequest %s: name/id mismatch", crr.name)
            return
        try:
            status = await self._approve(crr)
        except PermanentError as exc:
            await self._write_status(
                crr.name,
                ClusterRegistrationRequestStatus(
                    result=ApprovedResult.FAILED, error_message=str(exc)
                ),
            )
            raise
        if status.to_dict() != crr.status.to_dict():
            await self._write_status(crr.name, status)
            logger.info(
                "approved ClusterRegistrationRequest %s: namespace %s, ManagedCluster %s",
                crr.name,
                status.dedicated_namespace,
                status.managed_cluster_name,
            )

    async def _approve(self, crr: ClusterRegistrationRequest) -> ClusterRegistrationRequestStatus:
        namespace = await self._ensure_namespace(crr)
        managed_cluster = await self._ensure_managed_cluster(crr, namespace)
        service_account = await self._ensure_service_account(crr, namespace)
        secret = await self._ensure_token_secret(crr, namespace, service_account)
        await self._ensure_cluster_rbac(crr, namespace, service_account)
        await self._ensure_namespace_rbac(crr, namespace, service_account)
        data = secret.get("data") or {}
        token, ca = _decode_data(data.get("token")), _decode_data(data.get("ca.crt"))
        if not token or not ca:
            raise TemporaryError(
                f"waiting for the token controller to fill Secret {namespace}/{service_account}",
                delay=self.settings.token_wait,
            )
        return ClusterRegistrationRequestStatus(
            result=ApprovedResult.APPROVED,
            dedicated_namespace=namespace,
            managed_cluster_name=managed_cluster,
            token=token,
            ca_certificate=ca,
        )

    # -- helpers -------------------------------------------------------------------------

    def _labels(self, crr: ClusterRegistrationRequest) -> dict[str, str]:
        out = {
            labels.OBJECT_CREATED_BY_LABEL: labels.CLUSTERNET_AGENT,
            labels.CLUSTER_ID_LABEL: crr.spec.cluster_id,
        }
        if crr.spec.cluster_name:
            out[labels.CLUSTER_NAME_LABEL] = crr.spec.cluster_name
        return out

    def _selector(self, crr: ClusterRegistrationRequest) -> str:
        return (
            f"{labels.OBJECT_CREATED_BY_LABEL}={labels.CLUSTERNET_AGENT},"
            f"{labels.CLUSTER_ID_LABEL}={crr.spec.cluster_id}"
        )

    async def _list(self, path: str, selector: str) -> list[Obj]:
        answer = await self.kube.request("GET", path, query={"labelSelector": selector})
        items = [item for item in answer.get("items") or [] if isinstance(item, dict)]
        # oldest first: if duplicates ever exist, everyone picks the same one
        items.sort(
            key=lambda o: (
                str(o["metadata"].get("creationTimestamp") or ""),
                str(o["metadata"].get("name") or ""),
            )
        )
        return items

    async def _get(self, path: str) -> Obj | None:
        try:
            return await self.kube.request("GET", path)
        except errors.APINotFound:
            return None

    async def _create(self, path: str, body: Obj) -> Obj:
        return await self.kube.request("POST", path, body=body)

    # -- 1. namespace --------------------------------------------------------------------

    async def _ensure_namespace(self, crr: ClusterRegistrationRequest) -> str:
        found = await self._list("/api/v1/namespaces", self._selector(crr))
        if found:
            namespace = found[0]
            if (namespace["metadata"].get("deletionTimestamp")) is not None:
                raise TemporaryError(
                    f"dedicated namespace {namespace['metadata']['name']} is being deleted",
                    delay=self.settings.token_wait,
                )
            return str(namespace["metadata"]["name"])
        metadata: Obj = {"labels": self._labels(crr)}
        wanted = crr.spec.cluster_namespace
        if wanted:
            metadata["name"] = wanted
        else:
            metadata["generateName"] = labels.DEDICATED_NAMESPACE_PREFIX
        try:
            created = await self._create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata},
            )
        except errors.APIConflict as exc:
            existing = await self._get(f"/api/v1/namespaces/{wanted}")
            if existing is None:
                raise TemporaryError(f"namespace {wanted} exists and vanished") from exc
            owner = (existing["metadata"].get("labels") or {}).get(labels.CLUSTER_ID_LABEL)
            if owner not in (None, crr.spec.cluster_id):
                raise PermanentError(
                    f"namespace {wanted} is the dedicated namespace of cluster {owner}"
                ) from exc
            await self.kube.request(
                "PATCH",
                f"/api/v1/namespaces/{wanted}",
                body={"metadata": {"labels": self._labels(crr)}},
                content_type="application/merge-patch+json",
            )
            return wanted
        name = str(created["metadata"]["name"])
        logger.info("created dedicated namespace %s for cluster %s", name, crr.spec.cluster_id)
        return name

    # -- 2. ManagedCluster ---------------------------------------------------------------

    async def _ensure_managed_cluster(self, crr: ClusterRegistrationRequest, namespace: str) -> str:
        found = await self._list(MANAGED_CLUSTERS.path, self._selector(crr))
        if found:
            return str(found[0]["metadata"]["name"])
        name = crr.spec.cluster_name or labels.registration_name(crr.spec.cluster_id)
        spec: Obj = {
            "clusterId": crr.spec.cluster_id,
            "clusterType": crr.spec.cluster_type or ClusterType.STANDARD,
            "syncMode": crr.spec.sync_mode or SyncMode.PULL,
        }
        if self.settings.cluster_init:
            spec["taints"] = [
                {
                    "key": labels.TAINT_CLUSTER_INITIALIZATION,
                    "value": labels.CLUSTER_INIT_WAITING,
                    "effect": labels.TAINT_EFFECT_NO_SCHEDULE,
                }
            ]
        body = {
            "apiVersion": f"{labels.CLUSTERS_GROUP}/v1beta1",
            "kind": "ManagedCluster",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {**crr.spec.cluster_labels, **self._labels(crr)},
            },
            "spec": spec,
        }
        path = resource_path(
            labels.CLUSTERS_GROUP, "v1beta1", "managedclusters", namespace=namespace
        )
        try:
            await self._create(path, body)
        except errors.APIConflict as exc:
            existing = await self._get(f"{path}/{name}")
            owner = ((existing or {}).get("spec") or {}).get("clusterId")
            if owner != crr.spec.cluster_id:
                raise PermanentError(
                    f"ManagedCluster {namespace}/{name} already exists for cluster {owner}"
                ) from exc
            return name
        logger.info("created ManagedCluster %s/%s", namespace, name)
        return name

    # -- 3. ServiceAccount and token Secret ----------------------------------------------

    async def _ensure_service_account(self, crr: ClusterRegistrationRequest, namespace: str) -> str:
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts"
        found = [
            sa
            for sa in await self._list(path, self._selector(crr))
            if sa["metadata"].get("deletionTimestamp") is None
        ]
        if found:
            return str(found[0]["metadata"]["name"])
        created = await self._create(
            path,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "generateName": labels.DEDICATED_NAMESPACE_PREFIX,
                    "namespace": namespace,
                    "labels": self._labels(crr),
                },
            },
        )
        name = str(created["metadata"]["name"])
        logger.info("created ServiceAccount %s/%s", namespace, name)
        return name

    async def _ensure_token_secret(
        self, crr: ClusterRegistrationRequest, namespace: str, service_account: str
    ) -> Obj:
        path = f"/api/v1/namespaces/{namespace}/secrets"
        existing = await self._get(f"{path}/{service_account}")
        if existing is not None:
            return existing
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": SA_TOKEN_TYPE,
            "metadata": {
                "name": service_account,
                "namespace": namespace,
                "labels": self._labels(crr),
                "annotations": {SA_NAME_ANNOTATION: service_account},
            },
        }
        try:
            return await self._create(path, body)
        except errors.APIConflict:
            again = await self._get(f"{path}/{service_account}")
            if again is None:
                raise TemporaryError(f"Secret {namespace}/{service_account} vanished") from None
            return again

    # -- 4. and 5. RBAC ------------------------------------------------------------------

    def _cluster_rules(self, cluster_id: str) -> list[Obj]:
        rules: list[Obj] = [
            {
                "apiGroups": [labels.CLUSTERS_GROUP],
                "resources": ["clusterregistrationrequests"],
                "verbs": ["create", "get"],
            },
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        ]
        if self.settings.socket_connection:
            rules.append(
                {
                    "apiGroups": [labels.PROXIES_GROUP],
                    "resources": ["sockets"],
                    "resourceNames": [cluster_id],
                    "verbs": ["*"],
                }
            )
        return rules

    async def _upsert(self, path: str, name: str, body: Obj, fields: tuple[str, ...]) -> None:
        """Create, or update ``fields`` of an autoupdate object when they differ."""
        existing = await self._get(f"{path}/{name}")
        if existing is None:
            try:
                await self._create(path, body)
                return
            except errors.APIConflict:
                existing = await self._get(f"{path}/{name}")
                if existing is None:
                    raise TemporaryError(f"{path}/{name} vanished") from None
        annotations = existing["metadata"].get("annotations") or {}
        if annotations.get(labels.AUTO_UPDATE_ANNOTATION, "true") != "true":
            return
        if all(existing.get(f) == body.get(f) for f in fields):
            return
        updated = {**existing, **{f: body[f] for f in fields if f in body}}
        await self.kube.request("PUT", f"{path}/{name}", body=updated)

    def _rbac_metadata(
        self, crr: ClusterRegistrationRequest, name: str, namespace: str = ""
    ) -> Obj:
        metadata: Obj = {
            "name": name,
            "labels": {
                labels.CLUSTER_BOOTSTRAPPING_LABEL: labels.RBAC_DEFAULTS,
                labels.OBJECT_CREATED_BY_LABEL: labels.CLUSTERNET_CONTROLLER_MANAGER,
                labels.CLUSTER_ID_LABEL: crr.spec.cluster_id,
            },
            "annotations": {labels.AUTO_UPDATE_ANNOTATION: "true"},
        }
        if namespace:
            metadata["namespace"] = namespace
        return metadata

    async def _ensure_cluster_rbac(
        self, crr: ClusterRegistrationRequest, namespace: str, service_account: str
    ) -> None:
        name = labels.registration_name(crr.spec.cluster_id)
        await self._upsert(
            resource_path(RBAC, "v1", "clusterroles"),
            name,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRole",
                "metadata": self._rbac_metadata(crr, name),
                "rules": self._cluster_rules(crr.spec.cluster_id),
            },
            ("rules",),
        )
        await self._upsert(
            resource_path(RBAC, "v1", "clusterrolebindings"),
            name,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "ClusterRoleBinding",
                "metadata": self._rbac_metadata(crr, name),
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                "subjects": [
                    {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
                ],
            },
            ("subjects",),
        )

    async def _ensure_namespace_rbac(
        self, crr: ClusterRegistrationRequest, namespace: str, service_account: str
    ) -> None:
        name = labels.MANAGED_CLUSTER_ROLE
        await self._upsert(
            resource_path(RBAC, "v1", "roles", namespace=namespace),
            name,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "Role",
                "metadata": self._rbac_metadata(crr, name, namespace),
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            },
            ("rules",),
        )
        await self._upsert(
            resource_path(RBAC, "v1", "rolebindings", namespace=namespace),
            name,
            {
                "apiVersion": f"{RBAC}/v1",
                "kind": "RoleBinding",
                "metadata": self._rbac_metadata(crr, name, namespace),
                "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": name},
                "subjects": [
                    {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
                ],
            },
            ("subjects",),
        )

    # -- status --------------------------------------------------------------------------

    async def _write_status(self, name: str, status: ClusterRegistrationRequestStatus) -> None:
        """PUT the status on the freshest CRR (a conflict is retried by the queue)."""
        path = resource_path(labels.CLUSTERS_GROUP, "v1beta1", CRRS.plural, name=name)
        current = await self.kube.request("GET", path)
        body = dict(current)
        body["status"] = status.to_dict()
        await self.kube.request("PUT", f"{path}/status", body=body)
