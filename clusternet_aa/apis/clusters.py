"""``clusters.clusternet.io/v1beta1``: ClusterRegistrationRequest and ManagedCluster."""

# `meta.field` is this package's dataclass field specifier (it wraps dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import ClassVar

from clusternet_aa.apis import labels
from clusternet_aa.apis.meta import (
    Condition,
    KubeObject,
    Model,
    Quantity,
    Taint,
    field,
    find_condition,
)

__all__ = [
    "API_VERSION",
    "ApprovedResult",
    "ClusterRegistrationRequest",
    "ClusterRegistrationRequestSpec",
    "ClusterRegistrationRequestStatus",
    "ClusterType",
    "ConditionReason",
    "ConditionType",
    "ManagedCluster",
    "ManagedClusterSpec",
    "ManagedClusterStatus",
    "NodeStatistics",
    "PodStatistics",
    "ResourceUsage",
    "SyncMode",
]

API_VERSION = f"{labels.CLUSTERS_GROUP}/v1beta1"


class ClusterType(enum.StrEnum):
    STANDARD = "StandardCluster"
    EDGE = "EdgeCluster"


class SyncMode(enum.StrEnum):
    PUSH = "Push"
    PULL = "Pull"
    DUAL = "Dual"


class ApprovedResult(enum.StrEnum):
    APPROVED = "Approved"
    DENIED = "Denied"
    FAILED = "Failed"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    CLUSTER_INIT = "ClusterInit"


class ConditionReason(enum.StrEnum):
    READY = "ManagedClusterReady"
    NOT_READY = "ManagedClusterNotReady"
    NEVER_UPDATED = "ClusterStatusNeverUpdated"
    UNKNOWN = "ClusterStatusUnknown"
    CLUSTER_INIT_DISABLED = "ClusterInitDisabled"


# --- ClusterRegistrationRequest ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterRegistrationRequestSpec(Model):
    cluster_id: str = field("clusterId", "", always=True)
    cluster_type: str = field("clusterType", "")
    cluster_name: str = field("clusterName", "")
    cluster_namespace: str = field("clusterNamespace", "")
    cluster_labels: dict[str, str] = field("clusterLabels", factory=dict)
    sync_mode: str = field("syncMode", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterRegistrationRequestStatus(Model):
    dedicated_namespace: str = field("dedicatedNamespace", "")
    #: The dedicated ServiceAccount token (Go ``[]byte``: base64 on the wire).
    token: bytes = field("token", b"", secret=True)
    #: The parent cluster's CA bundle, PEM (Go ``[]byte``: base64 on the wire).
    ca_certificate: bytes = field("caCertificate", b"")
    result: str | None = field("result", None)
    error_message: str = field("errorMessage", "")
    managed_cluster_name: str = field("managedClusterName", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterRegistrationRequest(KubeObject):
    """Cluster-scoped; named ``clusternet-<clusterID>`` and created by the agent."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "ClusterRegistrationRequest"
    PLURAL: ClassVar[str] = "clusterregistrationrequests"

    spec: ClusterRegistrationRequestSpec = field(
        "spec", factory=ClusterRegistrationRequestSpec, always=True
    )
    status: ClusterRegistrationRequestStatus = field(
        "status", factory=ClusterRegistrationRequestStatus, always=True
    )

    @property
    def approved(self) -> bool:
        return self.status.result == ApprovedResult.APPROVED


# --- ManagedCluster ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManagedClusterSpec(Model):
    cluster_id: str = field("clusterId", "", always=True)
    cluster_type: str = field("clusterType", "")
    sync_mode: str = field("syncMode", "", always=True)
    taints: list[Taint] = field("taints", factory=list)
    cluster_init_base_name: str | None = field("clusterInitBaseName", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeStatistics(Model):
    ready_nodes: int = field("readyNodes", 0)
    not_ready_nodes: int = field("notReadyNodes", 0)
    unknown_nodes: int = field("unknownNodes", 0)
    lost_nodes: int = field("lostNodes", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PodStatistics(Model):
    running_pods: int = field("runningPods", 0)
    total_pods: int = field("totalPods", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceUsage(Model):
    cpu_usage: Quantity | None = field("cpuUsage", None)
    memory_usage: Quantity | None = field("memoryUsage", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManagedClusterStatus(Model):
    """Written by the agent's status reports; the hub may force the health fields false."""

    last_observed_time: dt.datetime | None = field("lastObservedTime", None)
    k8s_version: str = field("k8sVersion", "")
    agent_version: str = field("agentVersion", "")
    platform: str = field("platform", "")
    apiserver_url: str = field("apiserverURL", "")
    healthz: bool = field("healthz", False, always=True)
    livez: bool = field("livez", False, always=True)
    readyz: bool = field("readyz", False, always=True)
    app_pusher: bool | None = field("appPusher", None)
    use_socket: bool = field("useSocket", False)
    parent_apiserver_url: str = field("parentAPIServerURL", "")
    kube_qps: float = field("kubeQPS", 0.0)
    kube_burst: int = field("kubeBurst", 0)
    #: Resource name -> quantity string (``{"cpu": "16", "memory": "64Gi"}``).
    allocatable: dict[str, Quantity] = field("allocatable", factory=dict)
    capacity: dict[str, Quantity] = field("capacity", factory=dict)
    cluster_cidr: str = field("clusterCIDR", "")
    service_cidr: str = field("serviceCIDR", "")
    node_statistics: NodeStatistics = field("nodeStatistics", factory=NodeStatistics)
    pod_statistics: PodStatistics | None = field("podStatistics", None)
    resource_usage: ResourceUsage | None = field("resourceUsage", None)
    conditions: list[Condition] = field("conditions", factory=list)
    heartbeat_frequency_seconds: int | None = field("heartbeatFrequencySeconds", None)
    predictor_enabled: bool = field("predictorEnabled", False)
    predictor_address: str = field("predictorAddress", "")
    predictor_direct_access: bool = field("predictorDirectAccess", False, always=True)

    def condition(self, type_: str) -> Condition | None:
        return find_condition(self.conditions, type_)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManagedCluster(KubeObject):
    """Namespaced, in the cluster's dedicated namespace; named after the cluster."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "ManagedCluster"
    PLURAL: ClassVar[str] = "managedclusters"

    spec: ManagedClusterSpec = field("spec", factory=ManagedClusterSpec, always=True)
    status: ManagedClusterStatus = field("status", factory=ManagedClusterStatus, always=True)

    @property
    def cluster_id(self) -> str:
        return self.spec.cluster_id

    @property
    def ready(self) -> bool:
        """Clusternet's "not lost": the Ready condition is True."""
        condition = self.status.condition(ConditionType.READY)
        return condition is not None and condition.status == "True"
