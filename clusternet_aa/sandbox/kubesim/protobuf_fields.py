"""Field-number tables for the Kubernetes protobuf messages kubectl's generator commands send.

Written from the public API definitions (``generated.proto`` of k8s.io/api and apimachinery,
and the Go struct tags of the same types). Each field records what its JSON form needs: the
JSON name, the wire value's type, and the Go shape that decides when ``encoding/json`` prints
it (a pointer prints only when set, ``omitempty`` drops zero values, a plain struct always
prints). Decoding with these rules gives the same dict kube-apiserver would build from the
object, which is what ``kubectl create --dry-run=client -o json`` shows for the same command.

The tables hold exactly the messages and fields those commands produce. A field missing here
makes the decoder refuse the body (415) instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: How a field's value is encoded on the wire and rendered in JSON.
ValueKind = Literal[
    "string", "int", "bool", "bytes", "message", "time", "intstr", "quantity", "map"
]
#: The value type of a ``map<string, V>`` field.
MapValue = Literal["string", "bytes", "quantity"]


@dataclass(frozen=True, kw_only=True)
class Field:
    """One field of a message: its JSON name, value kind, and Go encoding rules."""

    json: str
    kind: ValueKind
    #: The message type of a ``message`` field (a key of :data:`MESSAGES`).
    message: str = ""
    #: The value type of a ``map`` field.
    map_value: MapValue = "string"
    repeated: bool = False
    #: A Go pointer: printed (even when zero) exactly when the sender set it.
    pointer: bool = False
    #: ``json:",omitempty"``: a zero scalar, empty slice or empty map is left out.
    omitempty: bool = True


def _s(json: str, *, omitempty: bool = True) -> Field:
    return Field(json=json, kind="string", omitempty=omitempty)


def _i(json: str, *, pointer: bool = False, omitempty: bool = True) -> Field:
    return Field(json=json, kind="int", pointer=pointer, omitempty=omitempty)


def _b(json: str, *, pointer: bool = False, omitempty: bool = True) -> Field:
    return Field(json=json, kind="bool", pointer=pointer, omitempty=omitempty)


def _m(json: str, message: str, *, pointer: bool = False) -> Field:
    return Field(json=json, kind="message", message=message, pointer=pointer)


def _rs(json: str, *, omitempty: bool = True) -> Field:
    return Field(json=json, kind="string", repeated=True, omitempty=omitempty)


def _rm(json: str, message: str, *, omitempty: bool = True) -> Field:
    return Field(json=json, kind="message", message=message, repeated=True, omitempty=omitempty)


def _map(json: str, value: MapValue = "string") -> Field:
    return Field(json=json, kind="map", map_value=value)


def _time(json: str, *, pointer: bool = False, omitempty: bool = True) -> Field:
    return Field(json=json, kind="time", pointer=pointer, omitempty=omitempty)


def _intstr(json: str, *, pointer: bool = False) -> Field:
    return Field(json=json, kind="intstr", pointer=pointer)


#: Message name -> field number -> field. Names are ``<package>.<Message>``.
MESSAGES: dict[str, dict[int, Field]] = {
    # k8s.io/apimachinery/pkg/runtime
    "runtime.TypeMeta": {1: _s("apiVersion"), 2: _s("kind")},
    # k8s.io/apimachinery/pkg/apis/meta/v1
    "meta.v1.ObjectMeta": {
        1: _s("name"),
        2: _s("generateName"),
        3: _s("namespace"),
        4: _s("selfLink"),
        5: _s("uid"),
        6: _s("resourceVersion"),
        7: _i("generation"),
        8: _time("creationTimestamp"),
        9: _time("deletionTimestamp", pointer=True),
        10: _i("deletionGracePeriodSeconds", pointer=True),
        11: _map("labels"),
        12: _map("annotations"),
        14: _rs("finalizers"),
    },
    "meta.v1.LabelSelector": {
        1: _map("matchLabels"),
        2: _rm("matchExpressions", "meta.v1.LabelSelectorRequirement"),
    },
    "meta.v1.LabelSelectorRequirement": {
        1: _s("key", omitempty=False),
        2: _s("operator", omitempty=False),
        3: _rs("values"),
    },
    # k8s.io/api/core/v1
    "core.v1.Namespace": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "core.v1.NamespaceSpec"),
        3: _m("status", "core.v1.NamespaceStatus"),
    },
    "core.v1.NamespaceSpec": {1: _rs("finalizers")},
    "core.v1.NamespaceStatus": {1: _s("phase")},
    "core.v1.ConfigMap": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _map("data"),
        3: _map("binaryData", "bytes"),
        4: _b("immutable", pointer=True),
    },
    "core.v1.Secret": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _map("data", "bytes"),
        3: _s("type"),
        4: _map("stringData"),
        5: _b("immutable", pointer=True),
    },
    "core.v1.ServiceAccount": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _rm("secrets", "core.v1.ObjectReference"),
        3: _rm("imagePullSecrets", "core.v1.LocalObjectReference"),
        4: _b("automountServiceAccountToken", pointer=True),
    },
    "core.v1.ObjectReference": {
        1: _s("kind"),
        2: _s("namespace"),
        3: _s("name"),
        4: _s("uid"),
        5: _s("apiVersion"),
        6: _s("resourceVersion"),
        7: _s("fieldPath"),
    },
    "core.v1.LocalObjectReference": {1: _s("name")},
    "core.v1.PodTemplateSpec": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "core.v1.PodSpec"),
    },
    "core.v1.PodSpec": {
        2: _rm("containers", "core.v1.Container", omitempty=False),
        3: _s("restartPolicy"),
        4: _i("terminationGracePeriodSeconds", pointer=True),
        5: _i("activeDeadlineSeconds", pointer=True),
        6: _s("dnsPolicy"),
        7: _map("nodeSelector"),
        8: _s("serviceAccountName"),
        9: _s("serviceAccount"),
        10: _s("nodeName"),
        11: _b("hostNetwork"),
        12: _b("hostPID"),
        13: _b("hostIPC"),
        15: _rm("imagePullSecrets", "core.v1.LocalObjectReference"),
        16: _s("hostname"),
        17: _s("subdomain"),
        19: _s("schedulerName"),
        20: _rm("initContainers", "core.v1.Container"),
        21: _b("automountServiceAccountToken", pointer=True),
        24: _s("priorityClassName"),
    },
    "core.v1.Container": {
        1: _s("name", omitempty=False),
        2: _s("image"),
        3: _rs("command"),
        4: _rs("args"),
        5: _s("workingDir"),
        6: _rm("ports", "core.v1.ContainerPort"),
        7: _rm("env", "core.v1.EnvVar"),
        8: _m("resources", "core.v1.ResourceRequirements"),
        13: _s("terminationMessagePath"),
        14: _s("imagePullPolicy"),
        16: _b("stdin"),
        17: _b("stdinOnce"),
        18: _b("tty"),
        20: _s("terminationMessagePolicy"),
    },
    "core.v1.ContainerPort": {
        1: _s("name"),
        2: _i("hostPort"),
        3: _i("containerPort", omitempty=False),
        4: _s("protocol"),
        5: _s("hostIP"),
    },
    "core.v1.EnvVar": {1: _s("name", omitempty=False), 2: _s("value")},
    "core.v1.ResourceRequirements": {
        1: _map("limits", "quantity"),
        2: _map("requests", "quantity"),
    },
    "core.v1.Service": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "core.v1.ServiceSpec"),
        3: _m("status", "core.v1.ServiceStatus"),
    },
    "core.v1.ServiceSpec": {
        1: _rm("ports", "core.v1.ServicePort"),
        2: _map("selector"),
        3: _s("clusterIP"),
        4: _s("type"),
        5: _rs("externalIPs"),
        7: _s("sessionAffinity"),
        8: _s("loadBalancerIP"),
        9: _rs("loadBalancerSourceRanges"),
        10: _s("externalName"),
        11: _s("externalTrafficPolicy"),
        12: _i("healthCheckNodePort"),
        13: _b("publishNotReadyAddresses"),
        18: _rs("clusterIPs"),
        19: _rs("ipFamilies"),
        20: _s("ipFamilyPolicy"),
        21: _b("allocateLoadBalancerNodePorts", pointer=True),
    },
    "core.v1.ServicePort": {
        1: _s("name"),
        2: _s("protocol"),
        3: _i("port", omitempty=False),
        4: _intstr("targetPort"),
        5: _i("nodePort"),
    },
    "core.v1.ServiceStatus": {1: _m("loadBalancer", "core.v1.LoadBalancerStatus")},
    "core.v1.LoadBalancerStatus": {},
    # k8s.io/api/apps/v1
    "apps.v1.Deployment": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "apps.v1.DeploymentSpec"),
        3: _m("status", "apps.v1.DeploymentStatus"),
    },
    "apps.v1.DeploymentSpec": {
        1: _i("replicas", pointer=True),
        2: _m("selector", "meta.v1.LabelSelector", pointer=True),
        3: _m("template", "core.v1.PodTemplateSpec"),
        4: _m("strategy", "apps.v1.DeploymentStrategy"),
        5: _i("minReadySeconds"),
        6: _i("revisionHistoryLimit", pointer=True),
        7: _b("paused"),
        9: _i("progressDeadlineSeconds", pointer=True),
    },
    "apps.v1.DeploymentStrategy": {
        1: _s("type"),
        2: _m("rollingUpdate", "apps.v1.RollingUpdateDeployment", pointer=True),
    },
    "apps.v1.RollingUpdateDeployment": {
        1: _intstr("maxUnavailable", pointer=True),
        2: _intstr("maxSurge", pointer=True),
    },
    "apps.v1.DeploymentStatus": {
        1: _i("observedGeneration"),
        2: _i("replicas"),
        3: _i("updatedReplicas"),
        4: _i("availableReplicas"),
        5: _i("unavailableReplicas"),
        7: _i("readyReplicas"),
        8: _i("collisionCount", pointer=True),
        9: _i("terminatingReplicas", pointer=True),
    },
    # k8s.io/api/batch/v1
    "batch.v1.Job": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "batch.v1.JobSpec"),
        3: _m("status", "batch.v1.JobStatus"),
    },
    "batch.v1.JobSpec": {
        1: _i("parallelism", pointer=True),
        2: _i("completions", pointer=True),
        3: _i("activeDeadlineSeconds", pointer=True),
        4: _m("selector", "meta.v1.LabelSelector", pointer=True),
        5: _b("manualSelector", pointer=True),
        6: _m("template", "core.v1.PodTemplateSpec"),
        7: _i("backoffLimit", pointer=True),
        8: _i("ttlSecondsAfterFinished", pointer=True),
        9: Field(json="completionMode", kind="string", pointer=True),
        10: _b("suspend", pointer=True),
    },
    "batch.v1.JobStatus": {
        4: _i("active"),
        5: _i("succeeded"),
        6: _i("failed"),
        7: Field(json="completedIndexes", kind="string"),
        10: _i("ready", pointer=True),
        11: _i("terminating", pointer=True),
    },
    # k8s.io/api/rbac/v1
    "rbac.v1.Role": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _rm("rules", "rbac.v1.PolicyRule", omitempty=False),
    },
    "rbac.v1.ClusterRole": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _rm("rules", "rbac.v1.PolicyRule", omitempty=False),
        3: _m("aggregationRule", "rbac.v1.AggregationRule", pointer=True),
    },
    "rbac.v1.AggregationRule": {
        1: _rm("clusterRoleSelectors", "meta.v1.LabelSelector"),
    },
    "rbac.v1.PolicyRule": {
        1: _rs("verbs", omitempty=False),
        2: _rs("apiGroups"),
        3: _rs("resources"),
        4: _rs("resourceNames"),
        5: _rs("nonResourceURLs"),
    },
    "rbac.v1.RoleBinding": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _rm("subjects", "rbac.v1.Subject"),
        3: _m("roleRef", "rbac.v1.RoleRef"),
    },
    "rbac.v1.ClusterRoleBinding": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _rm("subjects", "rbac.v1.Subject"),
        3: _m("roleRef", "rbac.v1.RoleRef"),
    },
    "rbac.v1.Subject": {
        1: _s("kind", omitempty=False),
        2: _s("apiGroup"),
        3: _s("name", omitempty=False),
        4: _s("namespace"),
    },
    "rbac.v1.RoleRef": {
        1: _s("apiGroup", omitempty=False),
        2: _s("kind", omitempty=False),
        3: _s("name", omitempty=False),
    },
    # k8s.io/api/authentication/v1
    "authentication.v1.TokenRequest": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "authentication.v1.TokenRequestSpec"),
        3: _m("status", "authentication.v1.TokenRequestStatus"),
    },
    "authentication.v1.TokenRequestSpec": {
        1: _rs("audiences", omitempty=False),
        3: _m("boundObjectRef", "authentication.v1.BoundObjectReference", pointer=True),
        4: _i("expirationSeconds", pointer=True),
    },
    "authentication.v1.BoundObjectReference": {
        1: _s("kind"),
        2: _s("apiVersion"),
        3: _s("name"),
        4: _s("uid"),
    },
    "authentication.v1.TokenRequestStatus": {
        1: _s("token", omitempty=False),
        2: _time("expirationTimestamp", omitempty=False),
    },
    # ``kubectl auth whoami`` sends an empty SelfSubjectReview; UserInfo's ``extra``
    # (map<string, ExtraValue>) is left out, so a body that sets it is refused by name.
    "authentication.v1.SelfSubjectReview": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("status", "authentication.v1.SelfSubjectReviewStatus"),
    },
    "authentication.v1.SelfSubjectReviewStatus": {
        1: _m("userInfo", "authentication.v1.UserInfo"),
    },
    "authentication.v1.UserInfo": {
        1: _s("username"),
        2: _s("uid"),
        3: _rs("groups"),
    },
    # k8s.io/api/authorization/v1
    "authorization.v1.SelfSubjectAccessReview": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "authorization.v1.SelfSubjectAccessReviewSpec"),
        3: _m("status", "authorization.v1.SubjectAccessReviewStatus"),
    },
    "authorization.v1.SelfSubjectAccessReviewSpec": {
        1: _m("resourceAttributes", "authorization.v1.ResourceAttributes", pointer=True),
        2: _m("nonResourceAttributes", "authorization.v1.NonResourceAttributes", pointer=True),
    },
    "authorization.v1.ResourceAttributes": {
        1: _s("namespace"),
        2: _s("verb"),
        3: _s("group"),
        4: _s("version"),
        5: _s("resource"),
        6: _s("subresource"),
        7: _s("name"),
    },
    "authorization.v1.NonResourceAttributes": {1: _s("path"), 2: _s("verb")},
    "authorization.v1.SubjectAccessReviewStatus": {
        1: _b("allowed", omitempty=False),
        2: _s("reason"),
        3: _s("evaluationError"),
        4: _b("denied"),
    },
    "authorization.v1.SelfSubjectRulesReview": {
        1: _m("metadata", "meta.v1.ObjectMeta"),
        2: _m("spec", "authorization.v1.SelfSubjectRulesReviewSpec"),
        3: _m("status", "authorization.v1.SubjectRulesReviewStatus"),
    },
    "authorization.v1.SelfSubjectRulesReviewSpec": {1: _s("namespace")},
    "authorization.v1.SubjectRulesReviewStatus": {
        1: _rm("resourceRules", "authorization.v1.ResourceRule", omitempty=False),
        2: _rm("nonResourceRules", "authorization.v1.NonResourceRule", omitempty=False),
        3: _b("incomplete", omitempty=False),
        4: _s("evaluationError"),
    },
    "authorization.v1.ResourceRule": {
        1: _rs("verbs", omitempty=False),
        2: _rs("apiGroups"),
        3: _rs("resources"),
        4: _rs("resourceNames"),
    },
    "authorization.v1.NonResourceRule": {
        1: _rs("verbs", omitempty=False),
        2: _rs("nonResourceURLs"),
    },
}

#: (apiVersion, kind) of a request body -> its top-level message.
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "core.v1.Namespace",
    ("v1", "ConfigMap"): "core.v1.ConfigMap",
    ("v1", "Secret"): "core.v1.Secret",
    ("v1", "ServiceAccount"): "core.v1.ServiceAccount",
    ("v1", "Service"): "core.v1.Service",
    ("apps/v1", "Deployment"): "apps.v1.Deployment",
    ("batch/v1", "Job"): "batch.v1.Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "rbac.v1.Role",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "rbac.v1.ClusterRole",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rbac.v1.RoleBinding",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "rbac.v1.ClusterRoleBinding",
    ("authentication.k8s.io/v1", "TokenRequest"): "authentication.v1.TokenRequest",
    ("authentication.k8s.io/v1", "SelfSubjectReview"): "authentication.v1.SelfSubjectReview",
    (
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    ): "authorization.v1.SelfSubjectAccessReview",
    (
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    ): "authorization.v1.SelfSubjectRulesReview",
}
