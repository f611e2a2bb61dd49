"""``apps.clusternet.io/v1alpha1``: what to deploy, where, and with which overrides.

Subscription (user) -> FeedInventory (Dividing only) -> Base per bound cluster ->
Description per deployer -> HelmRelease per chart; Manifest holds shadow templates,
HelmChart a chart feed, Localization and Globalization the overrides.
"""

# `meta.field` is this package's dataclass field specifier (it wraps dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, ClassVar

from clusternet_aa.apis import labels
from clusternet_aa.apis.meta import KubeObject, LabelSelector, Model, Toleration, field

__all__ = [
    "API_VERSION",
    "AggregatedStatus",
    "Base",
    "BaseSpec",
    "ChartPullSecret",
    "ChartReference",
    "Description",
    "DescriptionDeployer",
    "DescriptionPhase",
    "DescriptionSpec",
    "DescriptionStatus",
    "DividingScheduling",
    "DynamicDividing",
    "Feed",
    "FeedInventory",
    "FeedInventorySpec",
    "FeedOrder",
    "FeedStatus",
    "FeedStatusPerCluster",
    "Globalization",
    "GlobalizationSpec",
    "HelmChart",
    "HelmChartPhase",
    "HelmChartSpec",
    "HelmChartStatus",
    "HelmOptions",
    "HelmRelease",
    "HelmReleaseSpec",
    "HelmReleaseStatus",
    "Localization",
    "LocalizationSpec",
    "Manifest",
    "ManifestStatus",
    "OverrideConfig",
    "OverridePolicy",
    "OverrideType",
    "ReplicaDividingType",
    "ReplicaRequirements",
    "ReplicaStatus",
    "SchedulingStrategy",
    "SubGroupStrategy",
    "Subscriber",
    "Subscription",
    "SubscriptionSpec",
    "SubscriptionStatus",
]

API_VERSION = f"{labels.APPS_GROUP}/v1alpha1"


class SchedulingStrategy(enum.StrEnum):
    REPLICATION = "Replication"
    DIVIDING = "Dividing"


class ReplicaDividingType(enum.StrEnum):
    STATIC = "Static"
    DYNAMIC = "Dynamic"


class DescriptionDeployer(enum.StrEnum):
    HELM = "Helm"
    GENERIC = "Generic"


class DescriptionPhase(enum.StrEnum):
    PENDING = "Pending"
    SUCCESS = "Success"
    FAILURE = "Failure"
    INSTALLING = "Installing"
    UPGRADING = "Upgrading"
    UNINSTALLING = "Uninstalling"
    SUPERSEDED = "Superseded"
    UNKNOWN = "Unknown"


class HelmChartPhase(enum.StrEnum):
    FOUND = "Found"
    NOT_FOUND = "NotFound"


class OverridePolicy(enum.StrEnum):
    APPLY_NOW = "ApplyNow"
    APPLY_LATER = "ApplyLater"


class OverrideType(enum.StrEnum):
    HELM = "Helm"
    JSON_PATCH = "JSONPatch"
    MERGE_PATCH = "MergePatch"
    FIELD_JSON_PATCH = "FieldJSONPatch"
    FIELD_MERGE_PATCH = "FieldMergePatch"


# --- Feed -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Feed(Model):
    """A reference to one object to deploy (a shadow template or a HelmChart)."""

    kind: str = field("kind", "", always=True)
    api_version: str = field("apiVersion", "", always=True)
    namespace: str = field("namespace", "")
    name: str = field("name", "", always=True)

    def key(self) -> str:
        """Clusternet's feed key: ``apiVersion/kind[/namespace]/name``."""
        parts = [self.api_version, self.kind, self.namespace, self.name]
        return "/".join(p for p in parts if p)

    def as_feed(self) -> Feed:
        """Only the Feed fields of an object embedding a Feed."""
        return Feed(
            kind=self.kind, api_version=self.api_version, namespace=self.namespace, name=self.name
        )


# --- Subscription -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubGroupStrategy(Model):
    min_clusters: int = field("minClusters", 0, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscriber(Model):
    cluster_affinity: LabelSelector = field("clusterAffinity", factory=LabelSelector, always=True)
    weight: int = field("weight", 0)
    sub_group_strategy: SubGroupStrategy | None = field("subGroupStrategy", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicDividing(Model):
    strategy: str = field("strategy", "Spread", always=True)
    #: ``[]corev1.TopologySpreadConstraint``, kept as JSON.
    topology_spread_constraints: list[dict[str, Any]] = field(
        "topologySpreadConstraints", factory=list
    )
    #: ``[]corev1.PreferredSchedulingTerm``, kept as JSON.
    preferred_clusters: list[dict[str, Any]] = field("preferredClusters", factory=list)
    min_clusters: int | None = field("minClusters", None)
    max_clusters: int | None = field("maxClusters", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DividingScheduling(Model):
    type: str = field("type", ReplicaDividingType.STATIC, always=True)
    dynamic_dividing: DynamicDividing | None = field("dynamicDividing", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubscriptionSpec(Model):
    scheduler_name: str = field("schedulerName", "")
    scheduling_by_sub_group: bool | None = field("schedulingBySubGroup", None)
    scheduling_strategy: str = field("schedulingStrategy", "")
    dividing_scheduling: DividingScheduling | None = field("dividingScheduling", None)
    priority: int | None = field("priority", None)
    preemption_policy: str | None = field("preemptionPolicy", None)
    subscribers: list[Subscriber] = field("subscribers", factory=list, always=True)
    cluster_tolerations: list[Toleration] = field("clusterTolerations", factory=list)
    feeds: list[Feed] = field("feeds", factory=list, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplicaStatus(Model):
    observed_generation: int = field("observedGeneration", 0)
    replicas: int = field("replicas", 0)
    updated_replicas: int = field("updatedReplicas", 0)
    current_replicas: int = field("currentReplicas", 0)
    ready_replicas: int = field("readyReplicas", 0)
    available_replicas: int = field("availableReplicas", 0)
    unavailable_replicas: int = field("unavailableReplicas", 0)
    active: int = field("active", 0)
    succeeded: int = field("succeeded", 0)
    failed: int = field("failed", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedStatus(Model):
    available: bool = field("available", False)
    replica_status: ReplicaStatus = field("replicaStatus", factory=ReplicaStatus)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedStatusPerCluster(FeedStatus):
    cluster_id: str = field("clusterId", "")
    cluster_name: str = field("clusterName", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AggregatedStatus(Feed):
    feed_status_summary: FeedStatus = field("feedStatusSummary", factory=FeedStatus)
    feed_status_details: list[FeedStatusPerCluster] = field("feedStatusDetails", factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubscriptionStatus(Model):
    #: ``<namespace>/<name>`` of the bound ManagedClusters, sorted.
    binding_clusters: list[str] = field("bindingClusters", factory=list)
    #: Feed key -> replicas per bound cluster (index-aligned with ``binding_clusters``).
    replicas: dict[str, list[int]] = field("replicas", factory=dict)
    spec_hash: int = field("specHash", 0)
    desired_releases: int = field("desiredReleases", 0)
    completed_releases: int = field("completedReleases", 0)
    aggregated_statuses: list[AggregatedStatus] = field("aggregatedStatuses", factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subscription(KubeObject):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Subscription"
    PLURAL: ClassVar[str] = "subscriptions"

    spec: SubscriptionSpec = field("spec", factory=SubscriptionSpec, always=True)
    status: SubscriptionStatus = field("status", factory=SubscriptionStatus, always=True)


# --- Base and Description ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseSpec(Model):
    feeds: list[Feed] = field("feeds", factory=list, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Base(KubeObject):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Base"
    PLURAL: ClassVar[str] = "bases"

    spec: BaseSpec = field("spec", factory=BaseSpec, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChartReference(Model):
    namespace: str = field("namespace", "", always=True)
    name: str = field("name", "", always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DescriptionSpec(Model):
    deployer: str = field("deployer", "", always=True)
    charts: list[ChartReference] = field("charts", factory=list)
    #: Generic: each object's JSON; Helm: each chart's values JSON (Go ``[][]byte``).
    raw: list[bytes] = field("raw", factory=list)
    #: Helm: each (overridden) HelmChart's JSON (Go ``[][]byte``).
    chart_raw: list[bytes] = field("chartRaw", factory=list)

    def raw_objects(self) -> list[Any]:
        """``raw`` decoded as JSON documents."""
        return [json.loads(item) for item in self.raw]

    @staticmethod
    def encode_objects(objects: list[Any]) -> list[bytes]:
        """JSON documents as ``raw``/``chartRaw`` items (compact, like Go's json.Marshal)."""
        return [json.dumps(o, separators=(",", ":")).encode() for o in objects]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManifestStatus(Feed):
    #: The object's ``.status`` as observed in the child cluster.
    observed_status: dict[str, Any] | None = field("observedStatus", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DescriptionStatus(Model):
    phase: str = field("phase", "")
    reason: str = field("reason", "")
    manifest_statuses: list[ManifestStatus] = field("manifestStatuses", factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Description(KubeObject):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Description"
    PLURAL: ClassVar[str] = "descriptions"

    spec: DescriptionSpec = field("spec", factory=DescriptionSpec, always=True)
    status: DescriptionStatus = field("status", factory=DescriptionStatus, always=True)


# --- Helm -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChartPullSecret(Model):
    name: str = field("name", "")
    namespace: str = field("namespace", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmOptions(Model):
    repo: str = field("repo", "", always=True)
    chart_pull_secret: ChartPullSecret = field("chartPullSecret", factory=ChartPullSecret)
    plain_http: bool | None = field("plainHTTP", None)
    chart: str = field("chart", "", always=True)
    version: str = field("version", "")
    create_namespace: bool | None = field("createNamespace", None)
    timeout_seconds: int = field("timeoutSeconds", 0)
    wait: bool | None = field("wait", None)
    wait_for_job: bool | None = field("waitForJob", None)
    replace: bool | None = field("replace", None)
    atomic: bool | None = field("atomic", None)
    upgrade_atomic: bool | None = field("upgradeAtomic", None)
    skip_crds: bool | None = field("skipCRDs", None)
    replace_crds: bool | None = field("replaceCRDs", None)
    disable_hooks: bool | None = field("disableHooks", None)
    force: bool | None = field("force", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmChartSpec(HelmOptions):
    target_namespace: str = field("targetNamespace", "", always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmChartStatus(Model):
    phase: str = field("phase", "")
    reason: str = field("reason", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmChart(KubeObject):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "HelmChart"
    PLURAL: ClassVar[str] = "helmcharts"

    spec: HelmChartSpec = field("spec", factory=HelmChartSpec, always=True)
    status: HelmChartStatus = field("status", factory=HelmChartStatus, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmReleaseSpec(HelmOptions):
    release_name: str | None = field("releaseName", None)
    target_namespace: str = field("targetNamespace", "", always=True)
    #: The release's Helm values as JSON (Go ``[]byte``).
    overrides: bytes = field("overrides", b"")

    def values(self) -> dict[str, Any]:
        """``overrides`` decoded (empty when unset)."""
        if not self.overrides:
            return {}
        decoded = json.loads(self.overrides)
        return decoded if isinstance(decoded, dict) else {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmReleaseStatus(Model):
    first_deployed: str = field("firstDeployed", "")
    last_deployed: str = field("lastDeployed", "")
    description: str = field("description", "")
    #: Helm's release status: deployed, failed, pending-install, ...
    phase: str = field("phase", "")
    notes: str = field("notes", "")
    version: int = field("version", 0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HelmRelease(KubeObject):
    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "HelmRelease"
    PLURAL: ClassVar[str] = "helmreleases"

    spec: HelmReleaseSpec = field("spec", factory=HelmReleaseSpec, always=True)
    status: HelmReleaseStatus = field("status", factory=HelmReleaseStatus, always=True)


# --- Manifest ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest(KubeObject):
    """A shadow template, in ``clusternet-reserved``; no spec or status."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Manifest"
    PLURAL: ClassVar[str] = "manifests"

    #: The (trimmed) object itself, as JSON.
    template: dict[str, Any] = field("template", factory=dict, always=True)


# --- overrides --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class OverrideConfig(Model):
    name: str = field("name", "")
    value: str = field("value", "", always=True)
    type: str = field("type", "", always=True)
    override_chart: bool = field("overrideChart", False)
    field_path: str = field("fieldPath", "")
    field_format: str = field("fieldFormat", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalizationSpec(Model):
    override_policy: str = field("overridePolicy", "")
    overrides: list[OverrideConfig] = field("overrides", factory=list)
    priority: int = field("priority", 0)
    feed: Feed = field("feed", factory=Feed)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlobalizationSpec(LocalizationSpec):
    #: None selects every cluster.
    cluster_affinity: LabelSelector | None = field("clusterAffinity", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Localization(KubeObject):
    """Overrides for the cluster of its dedicated namespace."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Localization"
    PLURAL: ClassVar[str] = "localizations"

    spec: LocalizationSpec = field("spec", factory=LocalizationSpec, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Globalization(KubeObject):
    """Cluster-scoped overrides for every (or every selected) cluster."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "Globalization"
    PLURAL: ClassVar[str] = "globalizations"

    spec: GlobalizationSpec = field("spec", factory=GlobalizationSpec, always=True)


# --- FeedInventory ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplicaRequirements(Model):
    node_selector: dict[str, str] = field("nodeSelector", factory=dict)
    tolerations: list[Toleration] = field("tolerations", factory=list)
    #: ``corev1.Affinity``, kept as JSON.
    affinity: dict[str, Any] | None = field("affinity", None)
    #: ``corev1.ResourceRequirements`` (a struct value: always written), kept as JSON.
    resources: dict[str, Any] = field("resources", factory=dict, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedOrder(Feed):
    desired_replicas: int | None = field("desiredReplicas", None)
    replica_requirements: ReplicaRequirements = field(
        "replicaRequirements", factory=ReplicaRequirements
    )
    replica_json_path: str = field("replicaJsonPath", "")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedInventorySpec(Model):
    feeds: list[FeedOrder] = field("feeds", factory=list, always=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeedInventory(KubeObject):
    """Named like its Subscription; only for Dividing scheduling."""

    API_VERSION: ClassVar[str] = API_VERSION
    KIND: ClassVar[str] = "FeedInventory"
    PLURAL: ClassVar[str] = "feedinventories"

    spec: FeedInventorySpec = field("spec", factory=FeedInventorySpec, always=True)
