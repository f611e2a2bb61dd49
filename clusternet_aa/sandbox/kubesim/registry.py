"""Which REST resources a kubesim instance serves: the built-in table plus those CRDs add.

The built-in entries copy what kube-apiserver 1.37 reports in discovery (verbs, short names,
categories, subresources), because kubectl's RESTMapper and ``kubectl get all`` are driven by
exactly these fields. CRDs add and remove entries at run time, so the registry is one mutable
object per server, never a module global.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo

#: Verbs of an ordinary namespaced or cluster-scoped resource.
CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
#: Verbs of resources that cannot be deleted as a collection (namespaces).
CRUD_NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
#: Verbs of the review resources: they are only ever created.
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class SubresourceInfo:
    """How discovery describes one subresource: the kind it answers with and its verbs."""

    group: str
    version: str
    kind: str
    verbs: tuple[str, ...]


def _r(
    group: str,
    version: str,
    resource: str,
    kind: str,
    *,
    namespaced: bool = True,
    verbs: tuple[str, ...] = CRUD,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        resource=resource,
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=categories,
        subresources=sub,
    )


BUILTINS: tuple[ResourceInfo, ...] = (
    _r("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _r("", "v1", "endpoints", "Endpoints", short=("ep",)),
    _r("", "v1", "events", "Event", short=("ev",)),
    _r(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        verbs=CRUD_NO_COLLECTION,
        short=("ns",),
        sub=("finalize", "status"),
    ),
    _r("", "v1", "nodes", "Node", namespaced=False, short=("no",), sub=("status",)),
    _r(
        "",
        "v1",
        "pods",
        "Pod",
        short=("po",),
        categories=("all",),
        sub=("attach", "exec", "log", "portforward", "status"),
    ),
    _r("", "v1", "secrets", "Secret"),
    _r("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",), sub=("token",)),
    _r(
        "",
        "v1",
        "services",
        "Service",
        verbs=CRUD,
        short=("svc",),
        categories=("all",),
        sub=("status",),
    ),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        categories=("api-extensions",),
        sub=("status",),
    ),
    _r(
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "APIService",
        namespaced=False,
        categories=("api-extensions",),
        sub=("status",),
    ),
    _r(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        short=("ds",),
        categories=("all",),
        sub=("status",),
    ),
    _r(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short=("deploy",),
        categories=("all",),
        sub=("scale", "status"),
    ),
    _r(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short=("sts",),
        categories=("all",),
        sub=("scale", "status"),
    ),
    _r(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        namespaced=False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authentication.k8s.io",
        "v1",
        "selfsubjectreviews",
        "SelfSubjectReview",
        namespaced=False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        namespaced=False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        namespaced=False,
        verbs=CREATE_ONLY,
    ),
    _r("batch", "v1", "jobs", "Job", categories=("all",), sub=("status",)),
    _r("coordination.k8s.io", "v1", "leases", "Lease"),
    _r("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
)

#: The order kube-apiserver lists its groups in (``/apis``); CRD groups follow, sorted.
GROUP_ORDER: tuple[str, ...] = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "batch",
    "coordination.k8s.io",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
)

#: Subresources whose answer is not the parent kind, as discovery reports them.
_SUBRESOURCE_KINDS: dict[str, SubresourceInfo] = {
    "scale": SubresourceInfo("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "token": SubresourceInfo("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "finalize": SubresourceInfo("", "v1", "Namespace", ("update",)),
    "eviction": SubresourceInfo("policy", "v1", "Eviction", ("create",)),
    "log": SubresourceInfo("", "v1", "Pod", ("get",)),
    "exec": SubresourceInfo("", "v1", "PodExecOptions", ("create", "get")),
    "attach": SubresourceInfo("", "v1", "PodAttachOptions", ("create", "get")),
    "portforward": SubresourceInfo("", "v1", "PodPortForwardOptions", ("create", "get")),
}


def subresource_info(parent: ResourceInfo, subresource: str) -> SubresourceInfo:
    """The kind and verbs discovery shows for ``<parent>/<subresource>``."""
    known = _SUBRESOURCE_KINDS.get(subresource)
    if known is not None:
        return known
    # status and the like answer with the parent kind itself.
    return SubresourceInfo(parent.group, parent.version, parent.kind, ("get", "patch", "update"))


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD version."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str = ""


@dataclass(frozen=True)
class CustomResource:
    """What a CRD contributes: a resource per served version, with its printer columns."""

    crd_name: str
    infos: tuple[ResourceInfo, ...]
    storage_version: str
    columns: dict[str, tuple[PrinterColumn, ...]]


class Registry:
    """The resources one server serves, looked up by URL parts or by kind."""

    def __init__(self, builtins: Iterable[ResourceInfo] = BUILTINS) -> None:
        self._builtins = tuple(builtins)
        self._custom: dict[str, CustomResource] = {}
        #: Bumped whenever the served set changes, so caches (OpenAPI) know to rebuild.
        self.version = 0

    def all(self) -> list[ResourceInfo]:
        """Every served resource, built-ins first."""
        result = list(self._builtins)
        for custom in self._custom.values():
            result.extend(custom.infos)
        return result

    def lookup(self, group: str, version: str, resource: str) -> ResourceInfo | None:
        for info in self.all():
            if (info.group, info.version, info.resource) == (group, version, resource):
                return info
        return None

    def by_kind(self, group: str, version: str, kind: str) -> ResourceInfo | None:
        for info in self.all():
            if (info.group, info.version, info.kind) == (group, version, kind):
                return info
        return None

    def by_group_kind(self, group: str, kind: str) -> ResourceInfo | None:
        """Any served version of a kind; owner references name a kind, not a resource."""
        for info in self.all():
            if (info.group, info.kind) == (group, kind):
                return info
        return None

    def resources_of(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self.all() if (i.group, i.version) == (group, version)]

    def group_versions(self) -> dict[str, list[str]]:
        """Group -> served versions, preferred first, groups in kube-apiserver's order."""
        found: dict[str, list[str]] = {}
        for info in self.all():
            versions = found.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        for custom in self._custom.values():
            versions = found[custom.infos[0].group]
            versions.sort(key=_version_priority)
        order = {g: n for n, g in enumerate(GROUP_ORDER)}
        return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))

    def storage_key(self, info: ResourceInfo) -> tuple[str, str]:
        """Objects of every version of one resource share storage: (group, resource)."""
        return (info.group, info.resource)

    def storage_version(self, group: str, resource: str) -> str:
        for custom in self._custom.values():
            first = custom.infos[0]
            if (first.group, first.resource) == (group, resource):
                return custom.storage_version
        for info in self._builtins:
            if (info.group, info.resource) == (group, resource):
                return info.version
        return ""

    def is_custom(self, info: ResourceInfo) -> bool:
        return info.schema is not None or any(info in c.infos for c in self._custom.values())

    def printer_columns(self, info: ResourceInfo) -> tuple[PrinterColumn, ...] | None:
        """A CRD version's printer columns; None for built-ins (they have their own printers)."""
        for custom in self._custom.values():
            if info in custom.infos:
                return custom.columns.get(info.version, ())
        return None

    def set_custom(self, custom: CustomResource) -> None:
        if self._custom.get(custom.crd_name) != custom:
            self.version += 1
        self._custom[custom.crd_name] = custom

    def remove_custom(self, crd_name: str) -> CustomResource | None:
        self.version += 1
        return self._custom.pop(crd_name, None)

    def custom(self, crd_name: str) -> CustomResource | None:
        return self._custom.get(crd_name)

    def builtins(self) -> Sequence[ResourceInfo]:
        return self._builtins


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """kube's version ordering: GA before beta before alpha, higher numbers first."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0, version)
    major = int(match.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[match.group(2) or ""]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor, version)


def crd_columns(version: Obj) -> tuple[PrinterColumn, ...]:
    """The printer columns of one CRD version entry."""
    return tuple(
        PrinterColumn(
            name=str(c.get("name", "")),
            type=str(c.get("type", "string")),
            json_path=str(c.get("jsonPath", "")),
            description=str(c.get("description", "")),
            priority=int(c.get("priority", 0)),
            format=str(c.get("format", "")),
        )
        for c in version.get("additionalPrinterColumns") or ()
    )
