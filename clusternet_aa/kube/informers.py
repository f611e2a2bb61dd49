"""A small list+watch cache of one resource type, as client-go's reflector and informer.

It lists once, then watches from the list's resourceVersion with bookmarks, resuming from the
last version it saw whenever a watch ends; a 410 Expired (history compacted) makes it relist and
turn the difference into events, so callbacks see every change even across gaps. Failures
(server down, CRD not installed yet, RBAC) back off exponentially with jitter and are kept in
:attr:`Informer.last_error` for health checks; the cache keeps serving what it last knew.

Callbacks are plain functions called on the event loop in order; they must not block. Work that
takes time belongs in the consumer's own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient, resource_path

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
Key = tuple[str, str]
EventHandler = Callable[[EventType, Obj], None]


@dataclass(frozen=True)
class ResourceRef:
    """A resource type to list and watch, optionally in one namespace."""

    group: str
    version: str
    plural: str
    namespace: str | None = None

    @property
    def path(self) -> str:
        return resource_path(self.group, self.version, self.plural, namespace=self.namespace)

    def __str__(self) -> str:
        gv = f"{self.group}/{self.version}" if self.group else self.version
        return f"{self.plural}.{gv}" + (f" in {self.namespace}" if self.namespace else "")


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential delays between failed attempts, with jitter, capped."""

    #: First delay in seconds.
    initial: float = 0.5
    #: Upper bound of a delay in seconds.
    maximum: float = 30.0
    #: Growth factor per consecutive failure.
    factor: float = 2.0
    #: Fraction of the delay added at random so that many clients do not retry in lockstep.
    jitter: float = 0.2

    def delay(self, failures: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** max(0, failures - 1))
        return base * (1 + random.uniform(0, self.jitter))


def object_key(obj: Obj) -> Key:
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class Informer:
    """Keeps :attr:`store` equal to the server's objects of one type; ``start()`` / ``stop()``."""

    def __init__(
        self,
        kube: KubeClient,
        resource: ResourceRef,
        *,
        label_selector: str = "",
        field_selector: str = "",
        on_event: EventHandler | None = None,
        backoff: Backoff | None = None,
        watch_timeout_seconds: int = 300,
    ) -> None:
        self.kube = kube
        self.resource = resource
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.handlers: list[EventHandler] = [on_event] if on_event is not None else []
        self.backoff = backoff or Backoff()
        self.watch_timeout_seconds = watch_timeout_seconds
        #: The cached objects by (namespace, name).
        self.store: dict[Key, Obj] = {}
        #: The last failure, or None after a successful list or watch.
        self.last_error: Exception | None = None
        #: How many times the full list was fetched (the first time included).
        self.list_count = 0
        self._resource_version = ""
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- public surface ------------------------------------------------------------------

    @property
    def has_synced(self) -> bool:
        """True once the first list has been applied (and ever after)."""
        return self._synced.is_set()

    async def wait_synced(self, within: float | None = None) -> bool:
        """Wait until the first list is in; False if ``within`` seconds passed first."""
        try:
            await asyncio.wait_for(self._synced.wait(), within)
        except TimeoutError:
            return False
        return True

    def get(self, name: str, namespace: str = "") -> Obj | None:
        return self.store.get((namespace, name))

    def items(self) -> list[Obj]:
        return list(self.store.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer {self.resource}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loop ------------------------------------------------------------------------

    def _selectors(self) -> list[tuple[str, str]]:
        query = []
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        return query

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._resource_version:
                    await self._list()
                await self._watch()
                failures = 0
            except errors.APIGone:
                logger.info(
                    "%s: resourceVersion %s expired, relisting",
                    self.resource,
                    self._resource_version,
                )
                self._resource_version = ""
            except errors.KubeError as exc:
                failures += 1
                self.last_error = exc
                delay = self.backoff.delay(failures)
                logger.warning("%s: %s; retrying in %.1fs", self.resource, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self) -> None:
        answer = await self.kube.request("GET", self.resource.path, query=self._selectors())
        items = answer.get("items") or []
        self.list_count += 1
        self._replace([item for item in items if isinstance(item, dict)], answer)
        self._resource_version = _resource_version(answer)
        self.last_error = None
        self._synced.set()

    def _replace(self, items: list[Obj], answer: Obj) -> None:
        """Apply a full list as events: adds and changes, then deletions of what vanished."""
        kind = str(answer.get("kind") or "").removesuffix("List")
        api_version = answer.get("apiVersion")
        fresh: dict[Key, Obj] = {}
        for item in items:
            # list items carry no kind/apiVersion on the wire; watch events do: make them agree
            if kind:
                item.setdefault("kind", kind)
            if api_version:
                item.setdefault("apiVersion", api_version)
            fresh[object_key(item)] = item
        old = self.store
        self.store = fresh
        for key, item in fresh.items():
            previous = old.get(key)
            if previous is None:
                self._emit("ADDED", item)
            elif _resource_version(previous) != _resource_version(item):
                self._emit("MODIFIED", item)
        for key, item in old.items():
            if key not in fresh:
                self._emit("DELETED", item)

    async def _watch(self) -> None:
        query = [
            *self._selectors(),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", self._resource_version),
            ("timeoutSeconds", str(self.watch_timeout_seconds)),
        ]
        idle = self.watch_timeout_seconds + 30.0
        async for event in self.kube.stream(self.resource.path, query=query, idle_timeout=idle):
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                raise errors.from_status(obj)
            version = _resource_version(obj)
            if kind == "BOOKMARK":
                self._resource_version = version or self._resource_version
                continue
            key = object_key(obj)
            if kind == "DELETED":
                self.store.pop(key, None)
                self._emit("DELETED", obj)
            elif kind in ("ADDED", "MODIFIED"):
                self.store[key] = obj
                self._emit(kind, obj)
            else:
                continue
            self._resource_version = version or self._resource_version
        self.last_error = None

    def _emit(self, kind: EventType, obj: Obj) -> None:
        for handler in self.handlers:
            try:
                handler(kind, obj)
            except Exception:  # one bad callback must not kill the informer
                logger.exception("%s: event handler failed on %s", self.resource, kind)
