"""Object semantics shared by the REST handlers and the controllers: create, update, delete.

This is where kubesim follows kube-apiserver's generic registry (``registry/generic/registry``):
optimistic concurrency on resourceVersion, the status subresource split, generation bumps,
finalizers and ``deletionTimestamp``, namespace existence checks and no-op updates that keep
the resourceVersion. The HTTP layer only decodes and encodes around these calls.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from clusternet_aa.sandbox.kubesim import defaults, naming
from clusternet_aa.sandbox.kubesim.registry import Registry
from clusternet_aa.sandbox.kubesim.store import Store, now_timestamp
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

#: Called before an object is written: (resource, new object, old object or None). It may
#: change the new object in place or raise a KubesimError to refuse the write.
PrepareHook = Callable[[ResourceInfo, Obj, "Obj | None"], None]

_NAMESPACES = ("", "namespaces")


def not_found(info: ResourceInfo, name: str) -> KubesimError:
    details: Obj = {"name": name, "kind": info.resource}
    if info.group:
        details["group"] = info.group
    qualified = f"{info.resource}.{info.group}" if info.group else info.resource
    return KubesimError(404, "NotFound", f'{qualified} "{name}" not found', details=details)


def already_exists(info: ResourceInfo, name: str) -> KubesimError:
    details: Obj = {"name": name, "kind": info.resource}
    if info.group:
        details["group"] = info.group
    qualified = f"{info.resource}.{info.group}" if info.group else info.resource
    return KubesimError(
        409, "AlreadyExists", f'{qualified} "{name}" already exists', details=details
    )


def conflict(info: ResourceInfo, name: str, why: str) -> KubesimError:
    details: Obj = {"name": name, "kind": info.resource}
    if info.group:
        details["group"] = info.group
    qualified = f"{info.resource}.{info.group}" if info.group else info.resource
    return KubesimError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified} "{name}": {why}',
        details=details,
    )


_MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _without_rv(obj: Obj) -> Obj:
    clone = copy.deepcopy(obj)
    meta = clone.get("metadata", {})
    meta.pop("resourceVersion", None)
    # Ownership changes are changes; a refreshed timestamp alone is not (as kube's fieldmanager).
    for entry in meta.get("managedFields") or ():
        if isinstance(entry, dict):
            entry.pop("time", None)
    return clone


class ObjectService:
    """Reads and writes objects of any served resource with kube-apiserver's semantics."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.hooks: dict[tuple[str, str], list[PrepareHook]] = {}
        self.allocator = defaults.ClusterIPAllocator()

    def add_hook(self, group: str, resource: str, hook: PrepareHook) -> None:
        self.hooks.setdefault((group, resource), []).append(hook)

    def _run_hooks(self, info: ResourceInfo, new: Obj, old: Obj | None) -> None:
        for hook in self.hooks.get((info.group, info.resource), ()):
            hook(info, new, old)

    def present(self, info: ResourceInfo, obj: Obj) -> Obj:
        """The object as the requested version shows it (CR versions share storage)."""
        obj["apiVersion"] = info.group_version
        obj["kind"] = info.kind
        return obj

    def _key(self, info: ResourceInfo) -> tuple[str, str]:
        return (info.group, info.resource)

    # -- reads ---------------------------------------------------------------------------

    def get(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        obj = self.store.get(self._key(info), namespace if info.namespaced else "", name)
        if obj is None:
            raise not_found(info, name)
        return self.present(info, obj)

    def list_objects(self, info: ResourceInfo, namespace: str | None) -> tuple[list[Obj], int]:
        items, rv = self.store.list_objects(self._key(info), namespace if info.namespaced else None)
        return [self.present(info, o) for o in items], rv

    # -- create --------------------------------------------------------------------------

    def check_namespace(self, info: ResourceInfo, namespace: str, name: str) -> None:
        """A namespaced create needs an existing namespace that is not terminating."""
        if not info.namespaced:
            return
        ns = self.store.get(_NAMESPACES, "", namespace)
        if ns is None:
            raise KubesimError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )
        if ns.get("metadata", {}).get("deletionTimestamp"):
            raise KubesimError(
                403,
                "Forbidden",
                f'{info.resource} "{name}" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
                details={
                    "name": name,
                    "kind": info.resource,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )

    def create(self, info: ResourceInfo, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Store a new object; ``obj`` has passed the HTTP layer's kind/namespace checks."""
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise KubesimError(400, "BadRequest", "metadata must be an object")
        if meta.get("resourceVersion"):
            raise KubesimError(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        defaults.convert_on_write(info, obj)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = naming.generate_name(str(meta["generateName"]))
        if not info.namespaced:
            meta.pop("namespace", None)
        for server_field in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "generation",
        ):
            meta.pop(server_field, None)
        naming.validate_metadata(info, obj)
        name = str(meta["name"])
        self.check_namespace(info, str(meta.get("namespace", "")), name)
        if defaults.resets_status_on_create(info):
            obj.pop("status", None)
        defaults.prepare_for_create(info, obj, self.allocator)
        if defaults.tracks_generation(info, self.registry.is_custom(info)):
            meta["generation"] = 1
        self._run_hooks(info, obj, None)
        if self.store.get(self._key(info), str(meta.get("namespace", "")), name) is not None:
            raise already_exists(info, name)
        if dry_run:
            meta.setdefault("uid", "")
            meta["creationTimestamp"] = now_timestamp()
            return self.present(info, obj)
        return self.present(info, self.store.insert(self._key(info), obj))

    # -- update --------------------------------------------------------------------------

    def update(
        self,
        info: ResourceInfo,
        new: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
        old: Obj | None = None,
    ) -> tuple[Obj, bool]:
        """Replace an object (PUT semantics); returns (object, created).

        ``old`` may be passed by a caller that already read it (patch), so the precondition
        compares against the version the patch was applied to.
        """
        meta = new.setdefault("metadata", {})
        name = str(meta.get("name", ""))
        namespace = str(meta.get("namespace", "")) if info.namespaced else ""
        if old is None:
            old = self.store.get(self._key(info), namespace, name)
        if old is None:
            if subresource or not defaults.allows_create_on_update(info):
                raise not_found(info, name)
            meta.pop("resourceVersion", None)
            return self.create(info, new, dry_run=dry_run), True

        requested_rv = str(meta.get("resourceVersion") or "")
        current_rv = str(old["metadata"].get("resourceVersion", ""))
        if requested_rv and requested_rv != current_rv:
            raise conflict(info, name, _MODIFIED)
        if not requested_rv and self.registry.is_custom(info):
            raise naming.invalid(
                info,
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )

        if subresource == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        elif subresource == "finalize":
            result = copy.deepcopy(old)
            result.setdefault("spec", {})["finalizers"] = (new.get("spec") or {}).get(
                "finalizers", []
            )
        else:
            result = new
            defaults.convert_on_write(info, result)
            if "status" in info.subresources:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            result_meta = result["metadata"]
            for kept in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if kept in old["metadata"]:
                    result_meta[kept] = old["metadata"][kept]
                else:
                    result_meta.pop(kept, None)
            if not info.namespaced:
                result_meta.pop("namespace", None)
            naming.validate_metadata(info, result)
            if old["metadata"].get("deletionTimestamp"):
                added = set(result_meta.get("finalizers") or ()) - set(
                    old["metadata"].get("finalizers") or ()
                )
                if added:
                    raise naming.invalid(
                        info,
                        name,
                        [
                            (
                                "metadata.finalizers",
                                "FieldValueForbidden",
                                "Forbidden: no new finalizers can be added if the object is "
                                "being deleted, found new finalizers "
                                + repr(sorted(added)).replace("'", '"'),
                            )
                        ],
                    )
        self.present(info, result)
        result["metadata"]["resourceVersion"] = current_rv
        self._run_hooks(info, result, old)
        if defaults.tracks_generation(info, self.registry.is_custom(info)) and _spec_part(
            result
        ) != _spec_part(old):
            result["metadata"]["generation"] = int(old["metadata"].get("generation", 0)) + 1
        if "managedFields" not in result["metadata"] and "managedFields" in old["metadata"]:
            result["metadata"]["managedFields"] = old["metadata"]["managedFields"]
        if _without_rv(result) == _without_rv(self.present(info, copy.deepcopy(old))):
            return self.present(info, old), False  # no-op: kube keeps the resourceVersion
        if dry_run:
            return result, False
        if result["metadata"].get("deletionTimestamp") and not self._blocking(result):
            removed = self.store.remove(self._key(info), namespace, name)
            return self.present(info, removed or result), False
        return self.present(info, self.store.replace(self._key(info), result)), False

    @staticmethod
    def _blocking(obj: Obj) -> bool:
        """Whether anything still holds a deleted object: finalizers, or a namespace's spec ones."""
        if obj.get("metadata", {}).get("finalizers"):
            return True
        return bool(obj.get("kind") == "Namespace" and (obj.get("spec") or {}).get("finalizers"))

    # -- delete --------------------------------------------------------------------------

    def delete(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        options: Obj | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete or start deleting; returns (object, gone now)."""
        options = options or {}
        namespace = namespace if info.namespaced else ""
        old = self.store.get(self._key(info), namespace, name)
        if old is None:
            raise not_found(info, name)
        self._check_preconditions(info, old, options.get("preconditions") or {})
        policy = _propagation_policy(options)
        obj = copy.deepcopy(old)
        meta = obj["metadata"]
        finalizers: list[str] = list(meta.get("finalizers") or [])
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy in ("Background",) and meta.get("deletionTimestamp"):
            finalizers = [f for f in finalizers if f not in ("orphan", "foregroundDeletion")]
        if finalizers:
            meta["finalizers"] = finalizers
        self.present(info, obj)
        if not self._blocking(obj):
            if dry_run:
                return obj, True
            removed = self.store.remove(self._key(info), namespace, name)
            return self.present(info, removed or obj), True
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_timestamp()
            meta["deletionGracePeriodSeconds"] = 0
            if "generation" in meta:
                meta["generation"] = int(meta["generation"]) + 1
            if (info.group, info.resource) == _NAMESPACES:
                obj.setdefault("status", {})["phase"] = "Terminating"
        if dry_run or obj == old:
            return obj, False
        return self.present(info, self.store.replace(self._key(info), obj)), False

    def _check_preconditions(self, info: ResourceInfo, old: Obj, preconditions: Obj) -> None:
        meta = old["metadata"]
        name = str(meta.get("name"))
        uid = preconditions.get("uid")
        if uid and uid != meta.get("uid"):
            raise conflict(
                info,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{meta.get('uid')}",
            )
        rv = preconditions.get("resourceVersion")
        if rv and rv != meta.get("resourceVersion"):
            raise conflict(
                info,
                name,
                f"Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in "
                f"object meta: {meta.get('resourceVersion')}",
            )

    def remove_finalizer(self, info: ResourceInfo, obj: Obj, finalizer: str) -> None:
        """Drop one finalizer (controllers finishing their part of a deletion)."""
        fresh = self.store.get(
            self._key(info), obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
        )
        if fresh is None:
            return
        finalizers = list(fresh["metadata"].get("finalizers") or [])
        if finalizer not in finalizers:
            return
        finalizers.remove(finalizer)
        fresh["metadata"]["finalizers"] = finalizers
        if not finalizers:
            del fresh["metadata"]["finalizers"]
        self.update(info, fresh, old=None)


def _propagation_policy(options: Obj) -> str:
    policy: Any = options.get("propagationPolicy")
    if policy in ("Orphan", "Background", "Foreground"):
        return str(policy)
    if policy:
        raise KubesimError(
            422,
            "Invalid",
            f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: '
            f'"{policy}": supported values: "Foreground", "Background", "Orphan", "nil"',
        )
    if options.get("orphanDependents") is True:
        return "Orphan"
    return "Background"
