"""CustomResourceDefinitions: creating one serves a new resource; deleting one stops serving it.

kube-apiserver's apiextensions server validates the CRD's names, marks it ``NamesAccepted`` and
``Established``, and starts serving each served version (discovery, REST, status and scale
subresources, printer columns). Deleting a CRD first deletes every custom resource (the
``customresourcecleanup`` finalizer), then the CRD itself. kubesim does the same, at once rather
than after an informer resync.
"""

from __future__ import annotations

from collections.abc import Callable

from clusternet_aa.sandbox.kubesim import naming
from clusternet_aa.sandbox.kubesim.objects import ObjectService
from clusternet_aa.sandbox.kubesim.registry import (
    CRUD,
    CustomResource,
    Registry,
    crd_columns,
)
from clusternet_aa.sandbox.kubesim.store import Event, now_timestamp
from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"

#: Called when a resource starts (True) or stops (False) being served, for subresource wiring.
ServingListener = Callable[[CustomResource, bool], None]


def custom_resource_of(crd: Obj) -> CustomResource:
    """The resources a (valid) CRD serves."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group", ""))
    plural = str(names.get("plural", ""))
    kind = str(names.get("kind", ""))
    infos = []
    columns = {}
    storage = ""
    for version in spec.get("versions") or []:
        name = str(version.get("name", ""))
        if version.get("storage"):
            storage = name
        if not version.get("served", False):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}
        infos.append(
            ResourceInfo(
                group=group,
                version=name,
                resource=plural,
                kind=kind,
                singular=str(names.get("singular") or kind.lower()),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs=CRUD,
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(s for s in ("scale", "status") if s in subresources),
                schema=schema,
            )
        )
        columns[name] = crd_columns(version)
    return CustomResource(
        crd_name=str(crd["metadata"]["name"]),
        infos=tuple(infos),
        storage_version=storage,
        columns=columns,
    )


class CrdManager:
    """Keeps a registry's custom resources in step with the stored CRDs."""

    def __init__(self, service: ObjectService, registry: Registry) -> None:
        self.service = service
        self.registry = registry
        self.listeners: list[ServingListener] = []
        service.add_hook(*CRD_KEY, self._prepare)
        service.store.add_listener(self._on_event)

    def _prepare(self, info: ResourceInfo, crd: Obj, old: Obj | None) -> None:
        """Validate a CRD and fill its status, as the apiextensions server does."""
        meta = crd["metadata"]
        name = str(meta.get("name", ""))
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group = str(spec.get("group", ""))
        plural = str(names.get("plural", ""))
        causes: list[naming.Cause] = []
        if not group:
            causes.append(("spec.group", "FieldValueRequired", "Required value"))
        if not plural:
            causes.append(("spec.names.plural", "FieldValueRequired", "Required value"))
        if not names.get("kind"):
            causes.append(("spec.names.kind", "FieldValueRequired", "Required value"))
        if plural and group and name != f"{plural}.{group}":
            causes.append(
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            )
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                (
                    "spec.scope",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                    '"Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions") or []
        if not versions or sum(1 for v in versions if v.get("storage")) != 1:
            causes.append(
                (
                    "spec.versions",
                    "FieldValueInvalid",
                    "Invalid value: must have exactly one version marked as storage version",
                )
            )
        if causes:
            raise naming.invalid(info, name, causes)
        if old is None:
            finalizers = list(meta.get("finalizers") or [])
            if CLEANUP_FINALIZER not in finalizers:
                finalizers.append(CLEANUP_FINALIZER)
            meta["finalizers"] = finalizers
        self._fill_status(crd, old)

    @staticmethod
    def _fill_status(crd: Obj, old: Obj | None) -> None:
        spec = crd["spec"]
        names = dict(spec.get("names") or {})
        names.setdefault("singular", str(names.get("kind", "")).lower())
        names.setdefault("listKind", f"{names.get('kind', '')}List")
        stamp = now_timestamp()
        previous = (old or {}).get("status") or {}
        stored = list(previous.get("storedVersions") or [])
        storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
        if storage not in stored:
            stored.append(storage)
        terminating = bool(crd["metadata"].get("deletionTimestamp"))
        conditions = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ]
        if terminating:
            conditions.append(
                {
                    "type": "Terminating",
                    "status": "True",
                    "lastTransitionTime": stamp,
                    "reason": "InstanceDeletionInProgress",
                    "message": "CustomResource deletion is in progress",
                }
            )
        old_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
        for condition in conditions:
            before = old_conditions.get(condition["type"])
            if before and before.get("status") == condition["status"]:
                condition["lastTransitionTime"] = before.get("lastTransitionTime", stamp)
        crd["status"] = {"conditions": conditions, "acceptedNames": names, "storedVersions": stored}

    def _on_event(self, event: Event) -> None:
        if event.resource != CRD_KEY:
            return
        name = str(event.object["metadata"]["name"])
        if event.type == "DELETED":
            removed = self.registry.remove_custom(name)
            if removed is not None and removed.infos:
                first = removed.infos[0]
                self.service.store.drop_resource((first.group, first.resource))
                for listener in self.listeners:
                    listener(removed, False)
            return
        custom = custom_resource_of(event.object)
        previous = self.registry.custom(name)
        self.registry.set_custom(custom)
        if previous != custom:
            for listener in self.listeners:
                if previous is not None:
                    listener(previous, False)
                listener(custom, True)

    def reconcile(self) -> None:
        """Finish deleting CRDs: delete their custom resources, then drop the finalizer."""
        store = self.service.store
        info = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert info is not None
        for crd in list(store.iter_refs(CRD_KEY)):
            meta = crd["metadata"]
            if not meta.get("deletionTimestamp") or CLEANUP_FINALIZER not in (
                meta.get("finalizers") or ()
            ):
                continue
            custom = self.registry.custom(str(meta["name"]))
            remaining = 0
            if custom is not None and custom.infos:
                served = custom.infos[0]
                for obj in list(store.iter_refs((served.group, served.resource))):
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self.service.delete(
                            served, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
                        )
                remaining = sum(1 for _ in store.iter_refs((served.group, served.resource)))
            if remaining == 0:
                self.service.remove_finalizer(info, crd, CLEANUP_FINALIZER)
