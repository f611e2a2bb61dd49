"""APIService objects: where a group-version is served, and whether it is available.

This is kube-aggregator's bookkeeping: ``spec.service`` names a Service whose EndpointSlices (or
Endpoints, which kubesim users create more often) give the address an extension server listens
on; an APIService without ``spec.service`` is *Local* (served by kubesim itself). The checks and
the condition reasons and messages follow ``remote_available_controller.go`` word for word,
because clients (and the hub's own status reporting) read them.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from clusternet_aa.sandbox.kubesim.store import Store, now_timestamp
from clusternet_aa.sandbox.kubesim.types import Obj

APISERVICES = ("apiregistration.k8s.io", "apiservices")
SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
ENDPOINT_SLICES = ("discovery.k8s.io", "endpointslices")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
AUTOMANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"

#: kube-apiserver's ``apiVersionPriorities`` (group priority, version priority) for built-ins.
BUILTIN_PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
    ("apiregistration.k8s.io", "v1"): (18000, 15),
}
#: What kube's CRD registration controller gives a CRD group-version.
CRD_PRIORITY = (1000, 100)
#: The aggregator lists its own group first in ``/apis`` ("it's good to be king").
AGGREGATOR_GROUP = "apiregistration.k8s.io"


def priority_of(group: str, version: str) -> tuple[int, int]:
    return BUILTIN_PRIORITIES.get((group, version), CRD_PRIORITY)


def kube_version_key(version: str) -> tuple[int, int, int, str]:
    """Sort key for ``CompareKubeAwareVersionStrings``: GA, then beta, then alpha, newest first;
    versions that do not look like kube versions last, by name."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if match is None:
        return (3, 0, 0, version)
    stage = {"": 0, "beta": 1, "alpha": 2}[match.group(2) or ""]
    return (stage, -int(match.group(1)), -int(match.group(3) or 0), version)


def apiservice_name(group: str, version: str) -> str:
    """``<version>.<group>``; the core group's is ``v1.``."""
    return f"{version}.{group}"


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    port: int

    @property
    def server_name(self) -> str:
        """The TLS server name kube-aggregator dials with: ``<service>.<namespace>.svc``."""
        return f"{self.name}.{self.namespace}.svc"


@dataclass(frozen=True)
class APIServiceView:
    """The parts of one APIService object the aggregation layer acts on."""

    name: str
    group: str
    version: str
    group_priority: int
    version_priority: int
    service: ServiceRef | None
    ca_bundle: bytes | None
    insecure: bool
    available: bool

    @property
    def local(self) -> bool:
        return self.service is None


def view(obj: Obj) -> APIServiceView:
    spec = obj.get("spec") or {}
    service = spec.get("service")
    ref = None
    if isinstance(service, dict):
        ref = ServiceRef(
            namespace=str(service.get("namespace", "")),
            name=str(service.get("name", "")),
            port=int(service.get("port") or 443),
        )
    bundle = spec.get("caBundle")
    available = any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or ()
    )
    return APIServiceView(
        name=str(obj["metadata"]["name"]),
        group=str(spec.get("group", "")),
        version=str(spec.get("version", "")),
        group_priority=int(spec.get("groupPriorityMinimum") or 0),
        version_priority=int(spec.get("versionPriority") or 0),
        service=ref,
        ca_bundle=_decode_bundle(bundle) if bundle else None,
        insecure=bool(spec.get("insecureSkipTLSVerify")),
        available=available,
    )


def _decode_bundle(value: str) -> bytes:
    """``caBundle`` is ``[]byte`` in Go, so base64 in JSON. Go's decoder skips CR and LF (which
    kustomize's generators insert every 70 columns), so we do too."""
    try:
        return base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return b""


def all_views(store: Store) -> list[APIServiceView]:
    return [view(o) for o in store.iter_refs(APISERVICES)]


def find(store: Store, group: str, version: str) -> APIServiceView | None:
    obj = store.get(APISERVICES, "", apiservice_name(group, version))
    return None if obj is None else view(obj)


# -- resolving a Service to an endpoint -------------------------------------------------------


class ResolveError(Exception):
    """The Service cannot be reached; ``reason`` is the APIService condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _service_port_name(service: Obj, ref: ServiceRef) -> str:
    for port in (service.get("spec") or {}).get("ports") or ():
        if int(port.get("port", 0)) == ref.port:
            return str(port.get("name", ""))
    raise ResolveError(
        "ServicePortError",
        f'service/{ref.name} in "{ref.namespace}" is not listening on port {ref.port}',
    )


def _slice_addresses(slices: Iterable[Obj], port_name: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for endpoint_slice in slices:
        ports = [
            int(p["port"])
            for p in endpoint_slice.get("ports") or ()
            if p.get("name", "") == port_name and p.get("port") is not None
        ]
        if not ports:
            continue
        for endpoint in endpoint_slice.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready", True) is False:
                continue
            found.extend((str(a), ports[0]) for a in endpoint.get("addresses") or ())
    return found


def _endpoints_addresses(endpoints: Obj, port_name: str) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or ():
        ports = [
            int(p["port"])
            for p in subset.get("ports") or ()
            if p.get("name", "") == port_name and p.get("port") is not None
        ]
        if not ports:
            continue
        found.extend((str(a.get("ip", "")), ports[0]) for a in subset.get("addresses") or ())
    return found


def addresses(store: Store, ref: ServiceRef) -> list[tuple[str, int]]:
    """Ready (address, port) pairs behind a Service port; raises :class:`ResolveError`.

    kube 1.37 reads EndpointSlices labelled with the service name; kubesim also accepts a
    classic Endpoints object of the same name, since that is what simple test setups write.
    """
    service = store.get(SERVICES, ref.namespace, ref.name)
    if service is None:
        raise ResolveError(
            "ServiceNotFound", f'service/{ref.name} in "{ref.namespace}" is not present'
        )
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return [(str(spec.get("externalName", "")), ref.port)]
    port_name = _service_port_name(service, ref)
    slices = [
        s
        for s in store.iter_refs(ENDPOINT_SLICES)
        if s["metadata"].get("namespace") == ref.namespace
        and (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == ref.name
    ]
    endpoints = store.get(ENDPOINTS, ref.namespace, ref.name)
    if not slices and endpoints is None:
        raise ResolveError(
            "EndpointsNotFound",
            f'cannot find endpointslices for service/{ref.name} in "{ref.namespace}"',
        )
    found = _slice_addresses(slices, port_name)
    if endpoints is not None:
        found.extend(_endpoints_addresses(endpoints, port_name))
    if not found:
        raise ResolveError(
            "MissingEndpoints",
            f'endpointslices for service/{ref.name} in "{ref.namespace}" have no addresses '
            f'with port name "{port_name}"',
        )
    return found


def resolve(store: Store, ref: ServiceRef) -> tuple[str, int]:
    """One ready endpoint, picked at random as kube's endpoint resolver does."""
    return random.choice(addresses(store, ref))


# -- the Available condition ------------------------------------------------------------------


def available_condition(status: str, reason: str, message: str) -> Obj:
    return {
        "type": "Available",
        "status": status,
        "lastTransitionTime": now_timestamp(),
        "reason": reason,
        "message": message,
    }


LOCAL_CONDITION = ("True", "Local", "Local APIServices are always available")
PASSED_CONDITION = ("True", "Passed", "all checks passed")


def with_condition(obj: Obj, condition: Obj) -> Obj | None:
    """``obj`` with ``condition`` set as kube's ``SetAPIServiceCondition``; None if unchanged.

    The transition time only moves when the status flips, so a periodic re-check that finds the
    same state writes nothing (kube skips no-op status updates for the same reason).
    """
    status = obj.setdefault("status", {})
    conditions: list[Obj] = list(status.get("conditions") or [])
    for index, existing in enumerate(conditions):
        if existing.get("type") != condition["type"]:
            continue
        updated = dict(existing)
        if existing.get("status") != condition["status"]:
            updated["status"] = condition["status"]
            updated["lastTransitionTime"] = condition["lastTransitionTime"]
        updated["reason"] = condition["reason"]
        updated["message"] = condition["message"]
        if updated == existing:
            return None
        conditions[index] = updated
        status["conditions"] = conditions
        return obj
    conditions.append(condition)
    status["conditions"] = conditions
    return obj


def local_apiservice(group: str, version: str, *, automanaged: str) -> Obj:
    """The Local APIService kube's autoregister (or CRD registration) controller keeps."""
    group_priority, version_priority = priority_of(group, version)
    spec: Obj = {
        "version": version,
        "groupPriorityMinimum": group_priority,
        "versionPriority": version_priority,
    }
    if group:
        spec = {"group": group, **spec}
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {
            "name": apiservice_name(group, version),
            "labels": {AUTOMANAGED_LABEL: automanaged},
        },
        "spec": spec,
    }
