"""Background controllers: namespace deletion, ownerReference garbage collection, CRD cleanup.

In a real cluster these run in kube-controller-manager and the apiextensions server, after the
API call has returned; clients see the object linger with a deletionTimestamp and then vanish.
kubesim keeps that shape: one asyncio task, woken by every store write, reconciles level-based
until nothing is left to do. :meth:`Controllers.settle` lets tests wait for that point without
timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from clusternet_aa.sandbox.kubesim.crds import CrdManager
from clusternet_aa.sandbox.kubesim.objects import ObjectService
from clusternet_aa.sandbox.kubesim.registry import Registry
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

logger = logging.getLogger(__name__)

_NAMESPACES = ("", "namespaces")


class Controllers:
    """The reconcile loop of one server."""

    def __init__(self, service: ObjectService, registry: Registry, crds: CrdManager) -> None:
        self.service = service
        self.registry = registry
        self.crds = crds
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: More level-based reconcilers (token Secrets, namespace defaults...), run in order.
        self.extra: list[Callable[[], None]] = []
        service.store.add_listener(lambda _event: self._poke())

    def _poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kubesim-controllers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def settle(self) -> None:
        """Wait until the controllers have nothing left to do."""
        while not self._idle.is_set() or self._wake.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                self.reconcile()
            except Exception:
                logger.exception("kubesim controllers failed; retrying on the next change")
            await asyncio.sleep(0)
            if not self._wake.is_set():
                self._idle.set()

    def reconcile(self) -> None:
        self.crds.reconcile()
        self._namespaces()
        self._garbage_collect()
        for reconcile in self.extra:
            reconcile()

    # -- namespaces ----------------------------------------------------------------------

    def _served(self) -> list[ResourceInfo]:
        """One ResourceInfo per stored resource (any served version)."""
        seen: dict[tuple[str, str], ResourceInfo] = {}
        for info in self.registry.all():
            seen.setdefault((info.group, info.resource), info)
        return list(seen.values())

    def _delete(self, info: ResourceInfo, obj: Obj, policy: str = "Background") -> None:
        meta = obj["metadata"]
        try:
            self.service.delete(
                info, meta.get("namespace", ""), meta["name"], {"propagationPolicy": policy}
            )
        except KubesimError as e:
            if e.code != 404:
                raise

    def _namespaces(self) -> None:
        store = self.service.store
        info = self.registry.lookup("", "v1", "namespaces")
        assert info is not None
        for ns in list(store.iter_refs(_NAMESPACES)):
            meta = ns["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            if "kubernetes" not in ((ns.get("spec") or {}).get("finalizers") or ()):
                continue
            remaining = 0
            for served in self._served():
                if not served.namespaced:
                    continue
                for obj in list(store.iter_refs((served.group, served.resource))):
                    if obj["metadata"].get("namespace") != meta["name"]:
                        continue
                    remaining += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        self._delete(served, obj)
            if remaining:
                continue
            fresh = store.get(_NAMESPACES, "", meta["name"])
            if fresh is None:
                continue
            finalizers = [f for f in fresh["spec"].get("finalizers", []) if f != "kubernetes"]
            fresh["spec"]["finalizers"] = finalizers
            self.service.update(info, fresh, subresource="finalize")

    # -- garbage collection --------------------------------------------------------------

    def _garbage_collect(self) -> None:
        store = self.service.store
        served = self._served()
        by_uid: dict[str, tuple[ResourceInfo, Obj]] = {}
        for info in served:
            for obj in store.iter_refs((info.group, info.resource)):
                by_uid[obj["metadata"].get("uid", "")] = (info, obj)

        dependents: dict[str, list[tuple[ResourceInfo, Obj]]] = {}
        for info, obj in list(by_uid.values()):
            for ref in obj["metadata"].get("ownerReferences") or ():
                dependents.setdefault(str(ref.get("uid", "")), []).append((info, obj))

        for info, obj in list(by_uid.values()):
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or ()
            if meta.get("deletionTimestamp") and "orphan" in finalizers:
                for dep_info, dep in dependents.get(meta["uid"], ()):
                    self._drop_owner(dep_info, dep, meta["uid"])
                self.service.remove_finalizer(info, obj, "orphan")
            elif meta.get("deletionTimestamp") and "foregroundDeletion" in finalizers:
                children = dependents.get(meta["uid"], [])
                for dep_info, dep in children:
                    if not dep["metadata"].get("deletionTimestamp"):
                        self._delete(dep_info, dep, "Foreground")
                if not children:
                    self.service.remove_finalizer(info, obj, "foregroundDeletion")

        for info, obj in list(by_uid.values()):
            refs = obj["metadata"].get("ownerReferences") or ()
            if not refs or obj["metadata"].get("deletionTimestamp"):
                continue
            if all(self._owner_gone(obj, ref, by_uid) for ref in refs):
                self._delete(info, obj)

    def _owner_gone(
        self, dependent: Obj, ref: Obj, by_uid: dict[str, tuple[ResourceInfo, Obj]]
    ) -> bool:
        """True only when the owner is known not to exist (kube's GC is just as careful)."""
        api_version = str(ref.get("apiVersion", ""))
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        owner_info = self.registry.by_group_kind(group, str(ref.get("kind", "")))
        if owner_info is None:
            return False  # unknown kind: cannot tell, leave the dependent alone
        found = by_uid.get(str(ref.get("uid", "")))
        if found is None:
            return True
        info, owner = found
        if (info.group, info.kind) != (owner_info.group, owner_info.kind):
            return True
        return bool(
            owner_info.namespaced
            and owner["metadata"].get("namespace") != dependent["metadata"].get("namespace")
        )

    def _drop_owner(self, info: ResourceInfo, obj: Obj, owner_uid: str) -> None:
        meta = obj["metadata"]
        fresh = self.service.store.get(
            (info.group, info.resource), meta.get("namespace", ""), meta["name"]
        )
        if fresh is None:
            return
        refs = [
            r for r in fresh["metadata"].get("ownerReferences") or () if r.get("uid") != owner_uid
        ]
        if refs:
            fresh["metadata"]["ownerReferences"] = refs
        else:
            fresh["metadata"].pop("ownerReferences", None)
        self.service.update(info, fresh)
