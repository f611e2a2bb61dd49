"""Per-kind create-time preparation and defaulting, the part of kube's strategies clients see.

kube-apiserver resets or fills some fields on create (a new Deployment has no status and one
replica; a Namespace is Active with the ``kubernetes`` finalizer; a Service gets a cluster IP). Code
under test reads these fields, so kubesim fills the ones that matter to clients and printers.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

#: Resources whose objects carry ``metadata.generation`` (bumped on spec changes).
_GENERATION = frozenset(
    {
        ("", "pods"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    }
)
#: Resources whose status may be set on create (kube lets nodes register with a status).
_STATUS_ON_CREATE = frozenset({("", "nodes")})
#: Resources where PUT on a missing object creates it (kube's AllowCreateOnUpdate).
_CREATE_ON_UPDATE = frozenset(
    {
        ("", "endpoints"),
        ("", "events"),
        ("events.k8s.io", "events"),
        ("coordination.k8s.io", "leases"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    }
)


def tracks_generation(info: ResourceInfo, custom: bool) -> bool:
    return custom or (info.group, info.resource) in _GENERATION


def allows_create_on_update(info: ResourceInfo) -> bool:
    return (info.group, info.resource) in _CREATE_ON_UPDATE


def resets_status_on_create(info: ResourceInfo) -> bool:
    return "status" in info.subresources and (info.group, info.resource) not in _STATUS_ON_CREATE


class ClusterIPAllocator:
    """Hands out service cluster IPs from 10.96.0.0/12, as a default kube-apiserver does."""

    def __init__(self, cidr: str = "10.96.0.0/12") -> None:
        self._network = ipaddress.ip_network(cidr)
        self._next = 1

    def allocate(self) -> str:
        self._next += 1
        return str(self._network[self._next])


def _namespace(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


def _pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("serviceAccountName", "default")
    for container in spec.get("containers") or []:
        if isinstance(container, dict):
            container.setdefault("imagePullPolicy", _pull_policy(str(container.get("image", ""))))
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def _pull_policy(image: str) -> str:
    """kube's SetDefaults_Container: ``Always`` for an untagged or ``:latest`` image."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    # kubectl create deployment sends ``strategy: {}``; kube defaults the type inside it.
    strategy = spec.get("strategy") or {}
    spec["strategy"] = strategy
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.get("rollingUpdate") or {}
        strategy["rollingUpdate"] = rolling
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")


def _statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("revisionHistoryLimit", 10)


def _secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")


def _service(obj: Obj, allocator: ClusterIPAllocator) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec.get("clusterIP") in (None, "") and spec["type"] != "ExternalName":
        spec["clusterIP"] = allocator.allocate()
    if spec.get("clusterIP") and spec.get("clusterIP") != "None":
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def _secret_string_data(obj: Obj) -> None:
    """``stringData`` is write-only: kube merges it into ``data`` (its keys win) and drops it."""
    string_data = obj.pop("stringData", None)
    if string_data is None:
        return
    if not isinstance(string_data, dict) or not all(
        isinstance(v, str) for v in string_data.values()
    ):
        raise KubesimError(
            400,
            "BadRequest",
            "json: cannot unmarshal into Go struct field Secret.stringData of type "
            "map[string]string",
        )
    if string_data:
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj["data"] = data


#: ObjectMeta fields that are ``omitempty`` collections: kube never stores or returns them empty.
_OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences")


def convert_on_write(info: ResourceInfo, obj: Obj) -> None:
    """What kube's decoding and conversion do to every written object, in place.

    An empty ``labels: {}`` sent by a client (``kubectl apply`` patches often hold one) is gone
    after kube's round trip through Go structs; keeping it would show up in diffs and equality
    checks that kube-apiserver never produces.
    """
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in _OMIT_EMPTY_META:
            if key in meta and meta[key] in ({}, [], None):
                del meta[key]
    if (info.group, info.resource) == ("", "secrets"):
        _secret_string_data(obj)


def prepare_for_create(info: ResourceInfo, obj: Obj, allocator: ClusterIPAllocator) -> None:
    """Fill what kube-apiserver fills on create, in place."""
    handlers: dict[tuple[str, str], Callable[[Obj], None]] = {
        ("", "namespaces"): _namespace,
        ("", "pods"): _pod,
        ("", "secrets"): _secret,
        ("", "services"): lambda o: _service(o, allocator),
        ("apps", "deployments"): _deployment,
        ("apps", "statefulsets"): _statefulset,
    }
    handler = handlers.get((info.group, info.resource))
    if handler is not None:
        handler(obj)
