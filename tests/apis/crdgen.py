"""Writes ``manifests/crds/*.yaml``: Clusternet's CRDs, from the field facts below.

Run ``python -m tests.apis.crdgen`` after changing a schema here; ``test_crds.py`` fails when a
file under ``manifests/crds/`` differs from what this module renders.

The Clusternet parts (names, scope, printer columns, fields, enums, defaults, patterns) are
written out by hand below from Clusternet's API types (``pkg/apis/clusters/v1beta1``,
``pkg/apis/apps/v1alpha1``, see ``docs``-level facts in the reference's §1). Fields whose Go
type is a Kubernetes type (``corev1.Toleration``, ``metav1.LabelSelector``, ``corev1.Affinity``
…) are inlined from Kubernetes' own schemas, as controller-gen does, converted to the
structural form a CRD needs: no ``$ref``, one ``type`` per node, IntOrString and Quantity as
``x-kubernetes-int-or-string``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from clusternet_aa.sandbox.kubesim import schemas

Schema = dict[str, Any]

CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"

CLUSTERS_GROUP = "clusters.clusternet.io"
APPS_GROUP = "apps.clusternet.io"

UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
CLUSTER_NAME_PATTERN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([a-z0-9]([-a-z0-9]*[a-z0-9]))*"
HELM_REPO_PATTERN = (
    r"^(http|https|oci)?://(?:[a-zA-Z]|[0-9]|[$-_@.&+]|[!*\(\),]|(?:%[0-9a-fA-F][0-9a-fA-F]))+$"
)
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


# --- schema builders ---------------------------------------------------------------------------


def string(doc: str, **extra: Any) -> Schema:
    return {"description": doc, "type": "string", **extra}


def integer(doc: str, fmt: str | None = "int32", **extra: Any) -> Schema:
    """An integer; ``fmt`` None for a Go ``int`` (controller-gen gives it no format)."""
    out: Schema = {"description": doc}
    if fmt is not None:
        out["format"] = fmt
    return {**out, "type": "integer", **extra}


def boolean(doc: str, **extra: Any) -> Schema:
    return {"description": doc, "type": "boolean", **extra}


def byte_string(doc: str) -> Schema:
    """A Go ``[]byte``: a base64 string in JSON."""
    return {"description": doc, "format": "byte", "type": "string"}


def obj(doc: str, properties: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    out: Schema = {"description": doc, "properties": properties}
    if required:
        out["required"] = required
    out["type"] = "object"
    out.update(extra)
    return out


def array(doc: str, items: Schema, **extra: Any) -> Schema:
    return {"description": doc, "items": items, "type": "array", **extra}


def string_map(doc: str, **extra: Any) -> Schema:
    return {
        "additionalProperties": {"type": "string"},
        "description": doc,
        "type": "object",
        **extra,
    }


def quantity() -> Schema:
    return {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }


def resource_list(doc: str) -> Schema:
    return {"additionalProperties": quantity(), "description": doc, "type": "object"}


def raw_object(doc: str) -> Schema:
    """A ``runtime.RawExtension`` / embedded object Clusternet keeps untyped."""
    return {"description": doc, "type": "object", "x-kubernetes-preserve-unknown-fields": True}


# --- Kubernetes types, inlined ----------------------------------------------------------------

_CUSTOM_K8S: dict[str, Schema] = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": quantity(),
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
    },
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"format": "date-time", "type": "string"},
}

#: Extensions that mean nothing (or something wrong) inside a CRD schema.
_DROPPED = frozenset(
    {
        "x-kubernetes-group-version-kind",
        "x-kubernetes-patch-merge-key",
        "x-kubernetes-patch-strategy",
        "x-kubernetes-unions",
        "default",
    }
)


def k8s(name: str, doc: str | None = None) -> Schema:
    """Kubernetes definition ``name`` (``io.k8s.api.core.v1.Toleration``) as a structural schema."""
    result: Schema = _structural(schemas.definitions()[name], (name,))
    if doc is not None:
        result = {"description": doc, **{k: v for k, v in result.items() if k != "description"}}
    return result


def _structural(schema: Any, stack: tuple[str, ...]) -> Any:
    if isinstance(schema, list):
        return [_structural(item, stack) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive Kubernetes type {name} cannot be inlined")
        target = _CUSTOM_K8S.get(name)
        inlined = (
            copy.deepcopy(target)
            if target is not None
            else _structural(schemas.definitions()[name], (*stack, name))
        )
        description = schema.get("description") or inlined.get("description")
        rest = {k: v for k, v in inlined.items() if k != "description"}
        return {"description": description, **rest} if description else rest
    out: Schema = {}
    for key, value in sorted(schema.items()):
        if key in _DROPPED:
            continue
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if types:
                out[key] = types[0]
        elif key == "properties":
            out[key] = {n: _structural(p, stack) for n, p in sorted(value.items())}
        elif key in ("items", "additionalProperties"):
            out[key] = _structural(value, stack)
        elif key == "enum":
            out[key] = [v for v in value if v is not None]
        else:
            out[key] = copy.deepcopy(value)
    return out


def label_selector(doc: str) -> Schema:
    return k8s("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", doc)


def condition_list(doc: str) -> Schema:
    item = k8s("io.k8s.apimachinery.pkg.apis.meta.v1.Condition")
    # metav1.Condition's kubebuilder markers (kube keeps them only in Go comments).
    props = item["properties"]
    props["lastTransitionTime"]["format"] = "date-time"
    props["message"]["maxLength"] = 32768
    props["observedGeneration"]["minimum"] = 0
    props["reason"].update(
        maxLength=1024, minLength=1, pattern="^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    props["status"]["enum"] = ["True", "False", "Unknown"]
    props["type"].update(
        maxLength=316,
        pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    )
    return array(doc, item)


# --- CRD envelope -----------------------------------------------------------------------------


def age_column() -> Schema:
    return {"jsonPath": ".metadata.creationTimestamp", "name": "AGE", "type": "date"}


def crd(
    *,
    group: str,
    version: str,
    kind: str,
    plural: str,
    scope: str,
    short_names: list[str],
    doc: str,
    properties: Schema,
    required: list[str] | None = None,
    status: bool,
    columns: list[Schema] | None,
) -> Schema:
    names: Schema = {"categories": ["clusternet"], "kind": kind, "listKind": f"{kind}List"}
    names["plural"] = plural
    if short_names:
        names["shortNames"] = short_names
    names["singular"] = kind.lower()
    root: Schema = {
        "description": doc,
        "properties": {
            "apiVersion": string(API_VERSION_DOC),
            "kind": string(KIND_DOC),
            "metadata": {"type": "object"},
            **properties,
        },
    }
    if required:
        root["required"] = required
    root["type"] = "object"
    entry: Schema = {}
    if columns is not None:
        entry["additionalPrinterColumns"] = columns
    entry["name"] = version
    entry["schema"] = {"openAPIV3Schema": root}
    entry["served"] = True
    entry["storage"] = True
    if status:
        entry["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": names,
            "scope": scope,
            "versions": [entry],
        },
    }


# --- clusters.clusternet.io/v1beta1 -----------------------------------------------------------

CLUSTER_ID_DOC = (
    "ClusterID, a random (version 4) UUID, identifies the child cluster. The agent uses the uid "
    "of its leader-election Lease in the child cluster. It must not change on updates."
)
SYNC_MODES = ["Push", "Pull", "Dual"]


def cluster_registration_request() -> Schema:
    spec = obj(
        "ClusterRegistrationRequestSpec defines the desired state of ClusterRegistrationRequest.",
        {
            "clusterId": string(CLUSTER_ID_DOC, pattern=UUID_PATTERN),
            "clusterLabels": string_map("ClusterLabels are the labels of the child cluster."),
            "clusterName": string(
                "ClusterName is the cluster name: lower case alphanumeric characters or '-', "
                "starting and ending with an alphanumeric character.",
                maxLength=30,
                pattern=CLUSTER_NAME_PATTERN,
            ),
            "clusterNamespace": string(
                "ClusterNamespace is the desired dedicated namespace for the child cluster in "
                "the parent cluster; a generated name is used when empty.",
                maxLength=63,
            ),
            "clusterType": string("ClusterType denotes the type of the child cluster."),
            "syncMode": string(
                "SyncMode decides how resources are synchronized from the parent cluster to "
                "the child cluster.",
                default="Pull",
                enum=SYNC_MODES,
            ),
        },
        ["clusterId"],
    )
    status = obj(
        "ClusterRegistrationRequestStatus defines the observed state of "
        "ClusterRegistrationRequest.",
        {
            "caCertificate": byte_string(
                "CACertificate is the PEM encoded root certificate of the parent cluster."
            ),
            "dedicatedNamespace": string(
                "DedicatedNamespace is the namespace created in the parent cluster for the "
                "child cluster."
            ),
            "errorMessage": string(
                "ErrorMessage tells why the request was not approved successfully."
            ),
            "managedClusterName": string(
                "ManagedClusterName is the name of the ManagedCluster object for the child "
                "cluster in the parent cluster."
            ),
            "result": string(
                "Result tells whether the request has been approved: Approved, Denied or Failed."
            ),
            "token": byte_string(
                "DedicatedToken is set when Result is Approved: a token with full access to "
                "the dedicated namespace."
            ),
        },
    )
    return crd(
        group=CLUSTERS_GROUP,
        version="v1beta1",
        kind="ClusterRegistrationRequest",
        plural="clusterregistrationrequests",
        scope="Cluster",
        short_names=["clsrr"],
        doc="ClusterRegistrationRequest is the request of a child cluster to join the parent.",
        properties={"spec": spec, "status": status},
        status=True,
        columns=[
            {
                "description": "The unique id for the cluster",
                "jsonPath": ".spec.clusterId",
                "name": "CLUSTER ID",
                "type": "string",
            },
            {
                "description": "The status of current cluster registration request",
                "jsonPath": ".status.result",
                "name": "STATUS",
                "type": "string",
            },
            age_column(),
        ],
    )


def managed_cluster() -> Schema:
    spec = obj(
        "ManagedClusterSpec defines the desired state of ManagedCluster.",
        {
            "clusterId": string(CLUSTER_ID_DOC, pattern=UUID_PATTERN),
            "clusterInitBaseName": string(
                "ClusterInitBaseName is the name of the Base used to initialize the cluster. "
                "It cannot be changed or unset once set."
            ),
            "clusterType": string("ClusterType denotes the type of the child cluster."),
            "syncMode": string(
                "SyncMode decides how resources are synchronized from the parent cluster to "
                "the child cluster.",
                enum=SYNC_MODES,
            ),
            "taints": array(
                "Taints are attached to the cluster; Subscriptions must tolerate them.",
                k8s("io.k8s.api.core.v1.Taint"),
            ),
        },
        ["clusterId", "syncMode"],
        **{
            "x-kubernetes-validations": [
                {
                    "message": "clusterInitBaseName is immutable once set",
                    "rule": "!has(oldSelf.clusterInitBaseName) || "
                    "(has(self.clusterInitBaseName) && "
                    "self.clusterInitBaseName == oldSelf.clusterInitBaseName)",
                }
            ]
        },
    )
    node_statistics = obj(
        "NodeStatistics summarizes the nodes of the cluster.",
        {
            "lostNodes": integer("LostNodes is the number of nodes without a Ready condition."),
            "notReadyNodes": integer("NotReadyNodes is the number of not ready nodes."),
            "readyNodes": integer("ReadyNodes is the number of ready nodes."),
            "unknownNodes": integer("UnknownNodes is the number of nodes in unknown state."),
        },
    )
    pod_statistics = obj(
        "PodStatistics summarizes the pods of the cluster.",
        {
            "runningPods": integer("RunningPods is the number of running pods."),
            "totalPods": integer("TotalPods is the number of pods."),
        },
    )
    resource_usage = obj(
        "ResourceUsage is the resource usage of the cluster, from metrics-server.",
        {
            "cpuUsage": {"description": "CPUUsage is the cpu usage of the cluster.", **quantity()},
            "memoryUsage": {
                "description": "MemoryUsage is the memory usage of the cluster.",
                **quantity(),
            },
        },
    )
    status = obj(
        "ManagedClusterStatus defines the observed state of ManagedCluster.",
        {
            "agentVersion": string("AgentVersion is the version of the clusternet agent."),
            "allocatable": resource_list(
                "Allocatable is the sum of allocatable resources of the nodes."
            ),
            "apiserverURL": string(
                "APIServerURL is the child cluster's API server URL as the agent sees it."
            ),
            "appPusher": boolean(
                "AppPusher tells whether the parent may deploy applications in Push or Dual mode."
            ),
            "capacity": resource_list("Capacity is the sum of the resource capacity of the nodes."),
            "clusterCIDR": string("ClusterCIDR is the pod CIDR range of the cluster."),
            "conditions": condition_list("Conditions are the current conditions of the cluster."),
            "healthz": boolean("Healthz is the healthz status of the cluster (deprecated)."),
            "heartbeatFrequencySeconds": integer(
                "HeartbeatFrequencySeconds is how often the agent reports the status.", "int64"
            ),
            "k8sVersion": string("KubernetesVersion is the Kubernetes version of the cluster."),
            "kubeBurst": integer(
                "KubeBurst is the burst to use when talking to the child cluster.", "int32"
            ),
            "kubeQPS": {
                "description": "KubeQPS is the QPS to use when talking to the child cluster.",
                "type": "number",
            },
            "lastObservedTime": string(
                "LastObservedTime is when the agent last collected the status.",
                format="date-time",
            ),
            "livez": boolean("Livez is the livez status of the cluster."),
            "nodeStatistics": node_statistics,
            "parentAPIServerURL": string(
                "ParentAPIServerURL is the parent API server URL the cluster registered to "
                "(deprecated)."
            ),
            "platform": string("Platform is the platform of the cluster, e.g. linux/amd64."),
            "podStatistics": pod_statistics,
            "predictorAddress": string(
                "PredictorAddress is the address of the replica predictor of the cluster."
            ),
            "predictorDirectAccess": boolean(
                "PredictorDirectAccess tells whether the predictor is reachable directly "
                "rather than through the socket proxy."
            ),
            "predictorEnabled": boolean("PredictorEnabled tells whether a predictor is enabled."),
            "readyz": boolean("Readyz is the readyz status of the cluster."),
            "resourceUsage": resource_usage,
            "serviceCIDR": string("ServiceCIDR is the service CIDR range of the cluster."),
            "useSocket": boolean(
                "UseSocket tells whether to reach the child cluster through the socket proxy."
            ),
        },
    )
    return crd(
        group=CLUSTERS_GROUP,
        version="v1beta1",
        kind="ManagedCluster",
        plural="managedclusters",
        scope="Namespaced",
        short_names=["mcls"],
        doc="ManagedCluster represents a child cluster registered to the parent cluster.",
        properties={"spec": spec, "status": status},
        status=True,
        columns=[
            {
                "description": "The unique id for the cluster",
                "jsonPath": ".spec.clusterId",
                "name": "CLUSTER ID",
                "type": "string",
            },
            {
                "description": "The type of the cluster",
                "jsonPath": ".spec.clusterType",
                "name": "CLUSTER TYPE",
                "priority": 100,
                "type": "string",
            },
            {
                "description": "The cluster sync mode",
                "jsonPath": ".spec.syncMode",
                "name": "SYNC MODE",
                "type": "string",
            },
            {"jsonPath": ".status.k8sVersion", "name": "KUBERNETES", "type": "string"},
            {
                "jsonPath": ".status.conditions[?(@.type=='Ready')].status",
                "name": "STATUS",
                "type": "string",
            },
            age_column(),
            {
                "jsonPath": ".status.agentVersion",
                "name": "AGENT VERSION",
                "priority": 100,
                "type": "string",
            },
        ],
    )


# --- apps.clusternet.io/v1alpha1 --------------------------------------------------------------


def feed_properties() -> Schema:
    return {
        "apiVersion": string(
            "APIVersion defines the versioned schema of this representation of an object."
        ),
        "kind": string("Kind is the REST resource kind of the object, in CamelCase."),
        "name": string("Name of the target resource."),
        "namespace": string("Namespace of the target resource."),
    }


FEED_REQUIRED = ["apiVersion", "kind", "name"]


def feed(doc: str) -> Schema:
    return obj(doc, feed_properties(), FEED_REQUIRED)


def feeds(doc: str) -> Schema:
    return array(doc, feed("Feed defines the resource to be selected."))


def replica_status() -> Schema:
    counts = {
        "active": "The number of pending and running pods.",
        "availableReplicas": "Total number of available pods.",
        "currentReplicas": "The number of pods created from the current revision.",
        "failed": "The number of pods which reached phase Failed.",
        "readyReplicas": "The number of pods with a Ready condition.",
        "replicas": "Total number of non-terminated pods.",
        "succeeded": "The number of pods which reached phase Succeeded.",
        "unavailableReplicas": "Total number of unavailable pods.",
        "updatedReplicas": "Total number of pods with the desired template spec.",
    }
    props: Schema = {name: integer(doc) for name, doc in counts.items()}
    props["observedGeneration"] = integer(
        "The generation observed by the workload controller.", "int64"
    )
    return obj(
        "ReplicaStatus is the replica status of a workload-type feed.", dict(sorted(props.items()))
    )


def feed_status_properties() -> Schema:
    return {
        "available": boolean("Available tells whether the feed status is synced."),
        "replicaStatus": replica_status(),
    }


def subscription() -> Schema:
    subscriber = obj(
        "Subscriber selects clusters.",
        {
            "clusterAffinity": label_selector(
                "ClusterAffinity is a label query over managed clusters by labels."
            ),
            "subGroupStrategy": obj(
                "SubGroupStrategy defines the sub group scheduling of this subscriber.",
                {
                    "minClusters": integer(
                        "MinClusters is the number of clusters to pick from this subscriber.",
                        minimum=0,
                    )
                },
                ["minClusters"],
            ),
            "weight": integer(
                "Weight of the subscriber for static dividing scheduling.", minimum=0
            ),
        },
        ["clusterAffinity"],
    )
    dynamic = obj(
        "DynamicDividing describes how to divide replicas dynamically.",
        {
            "maxClusters": integer("MaxClusters is the upper bound of target clusters."),
            "minClusters": integer("MinClusters is the lower bound of target clusters."),
            "preferredClusters": array(
                "PreferredClusters describes the assigning preference.",
                k8s("io.k8s.api.core.v1.PreferredSchedulingTerm"),
            ),
            "strategy": string(
                "Strategy of dynamic dividing.", default="Spread", enum=["Spread", "Binpack"]
            ),
            "topologySpreadConstraints": array(
                "TopologySpreadConstraints describes how replicas spread across topology domains.",
                k8s("io.k8s.api.core.v1.TopologySpreadConstraint"),
            ),
        },
        ["strategy"],
    )
    dividing = obj(
        "Dividing scheduling parameters; only with schedulingStrategy Dividing.",
        {
            "dynamicDividing": dynamic,
            "type": string(
                "Type of dividing replica scheduling.",
                default="Static",
                enum=["Static", "Dynamic"],
            ),
        },
        ["type"],
    )
    spec = obj(
        "SubscriptionSpec defines the desired state of Subscription.",
        {
            "clusterTolerations": array(
                "ClusterTolerations tolerate matching taints of ManagedClusters.",
                k8s("io.k8s.api.core.v1.Toleration"),
            ),
            "dividingScheduling": dividing,
            "feeds": feeds("Feeds are the resources to deploy."),
            "preemptionPolicy": string(
                "PreemptionPolicy is the policy for preempting Subscriptions of lower priority.",
                default="PreemptLowerPriority",
                enum=["PreemptLowerPriority", "PreemptNever"],
            ),
            "priority": integer("Priority of the Subscription; higher values are scheduled first."),
            "schedulerName": string(
                "SchedulerName is the scheduler handling this Subscription.", default="default"
            ),
            "schedulingBySubGroup": boolean(
                "SchedulingBySubGroup schedules onto the clusters of each subscriber separately."
            ),
            "schedulingStrategy": string(
                "SchedulingStrategy is the scheduling strategy of the Subscription.",
                default="Replication",
                enum=["Replication", "Dividing"],
            ),
            "subscribers": array("Subscribers select the target clusters.", subscriber),
        },
        ["feeds", "subscribers"],
    )
    per_cluster = obj(
        "FeedStatusPerCluster is the status of a feed in one child cluster.",
        {
            "clusterId": string("ClusterID is the id of the cluster.", pattern=UUID_PATTERN),
            "clusterName": string(
                "ClusterName is the name of the cluster.",
                maxLength=30,
                pattern=CLUSTER_NAME_PATTERN,
            ),
            **feed_status_properties(),
        },
    )
    aggregated = obj(
        "AggregatedStatus is the aggregated status of a feed.",
        {
            **feed_properties(),
            "feedStatusDetails": array(
                "FeedStatusDetails are the feed statuses in each child cluster.", per_cluster
            ),
            "feedStatusSummary": obj(
                "FeedStatusSummary aggregates the feed statuses of all child clusters.",
                feed_status_properties(),
            ),
        },
        FEED_REQUIRED,
    )
    status = obj(
        "SubscriptionStatus defines the observed state of Subscription.",
        {
            "aggregatedStatuses": array(
                "AggregatedStatuses are the aggregated statuses of the feeds.", aggregated
            ),
            "bindingClusters": array(
                "BindingClusters are the namespaced names of the clusters bound.",
                {"type": "string"},
            ),
            "completedReleases": integer(
                "CompletedReleases is the number of completed releases.", None
            ),
            "desiredReleases": integer("DesiredReleases is the number of releases desired.", None),
            "replicas": {
                "additionalProperties": {
                    "items": {"format": "int32", "type": "integer"},
                    "type": "array",
                },
                "description": "Replicas are the desired replicas in each bound cluster, by feed.",
                "type": "object",
            },
            "specHash": integer("SpecHash is the hash of the scheduled spec.", "int64"),
        },
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Subscription",
        plural="subscriptions",
        scope="Namespaced",
        short_names=["sub", "subs"],
        doc="Subscription installs a group of resources into one or more clusters.",
        properties={"spec": spec, "status": status},
        required=["spec"],
        status=True,
        columns=[age_column()],
    )


def base() -> Schema:
    spec = obj(
        "BaseSpec defines the desired state of Base.",
        {"feeds": feeds("Feeds are the resources to deploy.")},
        ["feeds"],
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Base",
        plural="bases",
        scope="Namespaced",
        short_names=[],
        doc="Base holds the resources of a Subscription for one cluster, before rendering.",
        properties={"spec": spec},
        required=["spec"],
        status=False,
        columns=[age_column()],
    )


DESCRIPTION_PHASES = [
    "Pending",
    "Success",
    "Failure",
    "Installing",
    "Upgrading",
    "Uninstalling",
    "Superseded",
    "Unknown",
]


def description() -> Schema:
    spec = obj(
        "DescriptionSpec defines the spec of Description.",
        {
            "chartRaw": array(
                "ChartRaw are the serialized HelmChart objects.",
                {"format": "byte", "type": "string"},
            ),
            "charts": array(
                "Charts are the HelmCharts to install.",
                obj(
                    "ChartReference refers to a HelmChart.",
                    {
                        "name": string("Name of the HelmChart."),
                        "namespace": string("Namespace of the HelmChart."),
                    },
                    ["name", "namespace"],
                ),
            ),
            "deployer": string(
                "Deployer is the deployer of this Description.", enum=["Helm", "Generic"]
            ),
            "raw": array(
                "Raw are the serialized objects (Generic) or Helm values (Helm).",
                {"format": "byte", "type": "string"},
            ),
        },
        ["deployer"],
    )
    manifest_status = obj(
        "ManifestStatus is the status of one feed.",
        {
            **feed_properties(),
            "observedStatus": raw_object("ObservedStatus is the observed status of the feed."),
        },
        FEED_REQUIRED,
    )
    status = obj(
        "DescriptionStatus defines the observed state of Description.",
        {
            "manifestStatuses": array(
                "ManifestStatuses are the statuses of the objects of the Description.",
                manifest_status,
            ),
            "phase": string("Phase of the Description.", enum=DESCRIPTION_PHASES),
            "reason": string("Reason of the phase."),
        },
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Description",
        plural="descriptions",
        scope="Namespaced",
        short_names=["desc"],
        doc="Description holds the rendered resources to install into one cluster.",
        properties={"spec": spec, "status": status},
        required=["spec"],
        status=True,
        columns=[
            {"jsonPath": ".spec.deployer", "name": "DEPLOYER", "type": "string"},
            {"jsonPath": ".status.phase", "name": "STATUS", "type": "string"},
            age_column(),
        ],
    )


def helm_options() -> Schema:
    flag = boolean
    return {
        "atomic": flag("Atomic uninstalls a failed install."),
        "chart": string("Chart is the name of the chart in the repository."),
        "chartPullSecret": obj(
            "ChartPullSecret refers to a Secret with the repository credentials "
            "(keys username and password).",
            {
                "name": string("Name of the Secret."),
                "namespace": string("Namespace of the Secret."),
            },
        ),
        "createNamespace": flag(
            "CreateNamespace creates the target namespace on install.", default=True
        ),
        "disableHooks": flag("DisableHooks disables hook processing."),
        "force": flag("Force ignores certain warnings on upgrade."),
        "plainHTTP": flag("PlainHTTP uses plain HTTP for OCI registries."),
        "replace": flag("Replace re-uses the name of a deleted release."),
        "replaceCRDs": flag("ReplaceCRDs replaces the CRDs of the chart before install/upgrade."),
        "repo": string(
            "Repo is the Helm repository (http, https or oci URL).", pattern=HELM_REPO_PATTERN
        ),
        "skipCRDs": flag("SkipCRDs skips installing CRDs."),
        "timeoutSeconds": integer(
            "TimeoutSeconds is the timeout of install, upgrade, rollback and uninstall.",
            default=300,
        ),
        "upgradeAtomic": flag("UpgradeAtomic rolls back a failed upgrade."),
        "version": string("Version is the chart version; the latest when empty."),
        "wait": flag("Wait waits for the resources to be ready."),
        "waitForJob": flag("WaitForJob waits for the Jobs to complete."),
    }


def helm_columns(status_doc: str) -> list[Schema]:
    return [
        {
            "description": "The helm chart name",
            "jsonPath": ".spec.chart",
            "name": "CHART",
            "type": "string",
        },
        {
            "description": "The helm chart version",
            "jsonPath": ".spec.version",
            "name": "VERSION",
            "type": "string",
        },
        {
            "description": "The helm repo url",
            "jsonPath": ".spec.repo",
            "name": "REPO",
            "type": "string",
        },
        {
            "description": status_doc,
            "jsonPath": ".status.phase",
            "name": "STATUS",
            "type": "string",
        },
        age_column(),
    ]


def helm_chart() -> Schema:
    spec = obj(
        "HelmChartSpec defines the spec of HelmChart.",
        {
            **helm_options(),
            "targetNamespace": string("TargetNamespace is the namespace to install into."),
        },
        ["chart", "repo", "targetNamespace"],
    )
    spec["properties"] = dict(sorted(spec["properties"].items()))
    status = obj(
        "HelmChartStatus defines the observed state of HelmChart.",
        {
            "phase": string("Phase of the HelmChart.", enum=["Found", "NotFound"]),
            "reason": string("Reason of the phase."),
        },
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="HelmChart",
        plural="helmcharts",
        scope="Namespaced",
        short_names=["chart", "charts"],
        doc="HelmChart is a Helm chart to deploy.",
        properties={"spec": spec, "status": status},
        required=["spec"],
        status=True,
        columns=helm_columns("The helm chart status"),
    )


def helm_release() -> Schema:
    spec = obj(
        "HelmReleaseSpec defines the spec of HelmRelease.",
        {
            **helm_options(),
            "overrides": byte_string("Overrides are the values of this release (JSON)."),
            "releaseName": string("ReleaseName is the release name in the child cluster."),
            "targetNamespace": string("TargetNamespace is the namespace to install into."),
        },
        ["chart", "repo", "targetNamespace"],
    )
    spec["properties"] = dict(sorted(spec["properties"].items()))
    status = obj(
        "HelmReleaseStatus defines the observed state of HelmRelease.",
        {
            "description": string("Description is a human-friendly log entry of the release."),
            "firstDeployed": string("FirstDeployed is when the release was first deployed."),
            "lastDeployed": string("LastDeployed is when the release was last deployed."),
            "notes": string("Notes are the rendered NOTES.txt of the chart."),
            "phase": string("Phase is the Helm status of the release."),
            "version": integer("Version is the revision of the release.", None),
        },
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="HelmRelease",
        plural="helmreleases",
        scope="Namespaced",
        short_names=["hr"],
        doc="HelmRelease is a Helm release in one child cluster.",
        properties={"spec": spec, "status": status},
        required=["spec"],
        status=True,
        columns=helm_columns("The helm release status"),
    )


def manifest() -> Schema:
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Manifest",
        plural="manifests",
        scope="Namespaced",
        short_names=[],
        doc="Manifest stores a raw object (a template created through the shadow API).",
        properties={"template": raw_object("Template is the raw Kubernetes object.")},
        required=["template"],
        status=False,
        columns=[age_column()],
    )


def override_config() -> Schema:
    return obj(
        "OverrideConfig is one override.",
        {
            "fieldFormat": string(
                "FieldFormat is the format of the string at fieldPath.", enum=["YAML", "JSON"]
            ),
            "fieldPath": string(
                "FieldPath is a JSON pointer to the string field the Field* types patch."
            ),
            "name": string("Name of the override."),
            "overrideChart": boolean(
                "OverrideChart applies a Helm override to the HelmChart object, not its values."
            ),
            "type": string(
                "Type of the override.",
                enum=["Helm", "JSONPatch", "MergePatch", "FieldJSONPatch", "FieldMergePatch"],
            ),
            "value": string("Value of the override (YAML or JSON)."),
        },
        ["type", "value"],
    )


def override_spec(kind: str, *, cluster_affinity: bool) -> Schema:
    props: Schema = {}
    if cluster_affinity:
        props["clusterAffinity"] = label_selector(
            "ClusterAffinity selects the ManagedClusters to apply to; all when empty."
        )
    props["feed"] = feed(f"Feed is the object the {kind} applies to.")
    props["overridePolicy"] = string(
        "OverridePolicy is when overrides take effect.",
        default="ApplyLater",
        enum=["ApplyNow", "ApplyLater"],
    )
    props["overrides"] = array("Overrides are the overrides to apply.", override_config())
    props["priority"] = integer(
        f"Priority orders the {kind}s of a feed, lowest applied first.",
        default=500,
        maximum=1000,
        minimum=0,
    )
    return obj(f"{kind}Spec defines the desired state of {kind}.", props)


def localization() -> Schema:
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Localization",
        plural="localizations",
        scope="Namespaced",
        short_names=["loc", "local"],
        doc="Localization overrides a feed for the clusters of its dedicated namespace.",
        properties={"spec": override_spec("Localization", cluster_affinity=False)},
        required=["spec"],
        status=False,
        columns=[age_column()],
    )


def globalization() -> Schema:
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="Globalization",
        plural="globalizations",
        scope="Cluster",
        short_names=["glob", "global"],
        doc="Globalization overrides a feed for all (or the selected) clusters.",
        properties={"spec": override_spec("Globalization", cluster_affinity=True)},
        required=["spec"],
        status=False,
        columns=[age_column()],
    )


def feed_inventory() -> Schema:
    requirements = obj(
        "ReplicaRequirements are the scheduling requirements of a replica.",
        {
            "affinity": k8s(
                "io.k8s.api.core.v1.Affinity", "Affinity are the scheduling constraints."
            ),
            "nodeSelector": string_map(
                "NodeSelector must match a node's labels for a replica to fit.",
                **{"x-kubernetes-map-type": "atomic"},
            ),
            "resources": k8s(
                "io.k8s.api.core.v1.ResourceRequirements",
                "Resources are the compute resources of a replica.",
            ),
            "tolerations": array("Tolerations of a replica.", k8s("io.k8s.api.core.v1.Toleration")),
        },
    )
    order = obj(
        "FeedOrder is a feed with its scheduling requirements.",
        {
            **feed_properties(),
            "desiredReplicas": integer("DesiredReplicas is the number of desired replicas."),
            "replicaJsonPath": string(
                "ReplicaJsonPath is the JSON pointer to the replicas field, e.g. /spec/replicas."
            ),
            "replicaRequirements": requirements,
        },
        FEED_REQUIRED,
    )
    order["properties"] = dict(sorted(order["properties"].items()))
    spec = obj(
        "FeedInventorySpec defines the desired state of FeedInventory.",
        {"feeds": array("Feeds in the order of the Subscription.", order)},
        ["feeds"],
    )
    return crd(
        group=APPS_GROUP,
        version="v1alpha1",
        kind="FeedInventory",
        plural="feedinventories",
        scope="Namespaced",
        short_names=["finv"],
        doc="FeedInventory holds the feeds of a Subscription with their replica requirements.",
        properties={"spec": spec},
        required=["spec"],
        status=False,
        columns=None,
    )


ALL = (
    cluster_registration_request,
    managed_cluster,
    subscription,
    base,
    description,
    feed_inventory,
    globalization,
    localization,
    helm_chart,
    helm_release,
    manifest,
)


def file_name(definition: Schema) -> str:
    spec = definition["spec"]
    return f"{spec['group']}_{spec['names']['plural']}.yaml"


HEADER = "# Generated by `python -m tests.apis.crdgen`; edit tests/apis/crdgen.py, not this file.\n"


def render(definition: Schema) -> str:
    body = yaml.safe_dump(definition, sort_keys=False, width=100, allow_unicode=True)
    return HEADER + "---\n" + body


def crd_files() -> list[Path]:
    """The CRD files on disk (the folder also holds its kustomization.yaml)."""
    return sorted(p for p in CRD_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def rendered() -> dict[str, str]:
    """File name -> content for every CRD."""
    return {file_name(d): render(d) for d in (build() for build in ALL)}


def main() -> int:
    CRD_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (CRD_DIR / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
