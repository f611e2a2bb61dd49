"""The in-memory object store: objects, one global resourceVersion, and the watch event history.

Like etcd behind kube-apiserver, every write gets the next value of a single counter as its
``resourceVersion``, so clients can order writes across resources and resume watches. The history
keeps a bounded window of events; a watch resumed from before the window gets 410 Gone, which is
what makes clients' re-list paths testable. Watchers get bounded queues: a watcher that falls
too far behind is closed (as kube-apiserver closes slow watchers), never allowed to grow memory.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

#: (api group, resource): all versions of one resource share storage.
ResourceKey = tuple[str, str]
#: (namespace or "", name)
ObjectKey = tuple[str, str]

DEFAULT_HISTORY = 2000
DEFAULT_WATCH_QUEUE = 1000


@dataclass(frozen=True)
class Event:
    """One change: ``previous`` is the object before it (None for ADDED)."""

    type: str
    resource: ResourceKey
    object: Obj
    previous: Obj | None
    rv: int

    @property
    def namespace(self) -> str:
        ns: str = self.object.get("metadata", {}).get("namespace", "")
        return ns


@dataclass(eq=False)
class Watcher:
    """A subscription to one resource's events, with a bounded backlog."""

    resource: ResourceKey
    namespace: str | None
    limit: int
    events: deque[Event] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    closed: bool = False

    def offer(self, event: Event) -> None:
        if self.closed:
            return
        if len(self.events) >= self.limit:
            self.overflowed = True
            self.closed = True
        else:
            self.events.append(event)
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()

    async def next_batch(self) -> list[Event]:
        """Wait for events; an empty list means the watch was closed."""
        while not self.events and not self.closed:
            self.wakeup.clear()
            await self.wakeup.wait()
        batch = list(self.events)
        self.events.clear()
        return batch


def now_timestamp() -> str:
    """RFC 3339 seconds in UTC, the form of ``creationTimestamp``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """Objects keyed by (group, resource) and (namespace, name); every write emits an event."""

    def __init__(
        self, *, history: int = DEFAULT_HISTORY, watch_queue: int = DEFAULT_WATCH_QUEUE
    ) -> None:
        self._objects: dict[ResourceKey, dict[ObjectKey, Obj]] = {}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=history)
        #: Every event with rv > this is still in the history.
        self._history_floor = 0
        self._watchers: set[Watcher] = set()
        self._watch_queue = watch_queue
        self._listeners: list[Callable[[Event], None]] = []

    @property
    def resource_version(self) -> int:
        return self._rv

    def add_listener(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener`` synchronously after every write (controllers use it to wake up)."""
        self._listeners.append(listener)

    # -- reads ---------------------------------------------------------------------------

    def get(self, resource: ResourceKey, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(resource, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, resource: ResourceKey, namespace: str | None) -> tuple[list[Obj], int]:
        """Objects sorted as etcd keys are (namespace, then name), and the list RV."""
        bucket = self._objects.get(resource, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [copy.deepcopy(bucket[k]) for k in keys], self._rv

    def iter_refs(self, resource: ResourceKey) -> Iterator[Obj]:
        """Read-only view without copies, for controllers that only inspect."""
        yield from list(self._objects.get(resource, {}).values())

    def resources(self) -> list[ResourceKey]:
        return [k for k, v in self._objects.items() if v]

    # -- writes --------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def insert(self, resource: ResourceKey, obj: Obj) -> Obj:
        """Store a new object, stamping uid, creationTimestamp and resourceVersion."""
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(resource, {})
        if key in bucket:
            raise KubesimError(409, "AlreadyExists", f'"{meta["name"]}" already exists')
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_timestamp()
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        bucket[key] = copy.deepcopy(obj)
        self._emit(Event("ADDED", resource, copy.deepcopy(obj), None, rv))
        return obj

    def replace(self, resource: ResourceKey, obj: Obj) -> Obj:
        """Overwrite an existing object with a new resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.get(resource, {})
        previous = bucket.get(key)
        if previous is None:
            raise KubesimError(404, "NotFound", f'"{meta["name"]}" not found')
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        bucket[key] = copy.deepcopy(obj)
        self._emit(Event("MODIFIED", resource, copy.deepcopy(obj), previous, rv))
        return obj

    def remove(self, resource: ResourceKey, namespace: str, name: str) -> Obj | None:
        """Delete an object; the DELETED event carries a new resourceVersion, as in kube."""
        bucket = self._objects.get(resource, {})
        previous = bucket.pop((namespace, name), None)
        if previous is None:
            return None
        rv = self._next_rv()
        final = copy.deepcopy(previous)
        final["metadata"]["resourceVersion"] = str(rv)
        self._emit(Event("DELETED", resource, copy.deepcopy(final), previous, rv))
        return final

    def drop_resource(self, resource: ResourceKey) -> None:
        """Forget all objects of a resource at once (a deleted CRD), closing its watchers."""
        self._objects.pop(resource, None)
        for watcher in [w for w in self._watchers if w.resource == resource]:
            watcher.close()
            self._watchers.discard(watcher)

    def _emit(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen and self._history:
            self._history_floor = self._history[0].rv
        self._history.append(event)
        for watcher in list(self._watchers):
            if watcher.resource == event.resource and (
                watcher.namespace is None or watcher.namespace == event.namespace
            ):
                watcher.offer(event)
                if watcher.closed:
                    self._watchers.discard(watcher)
        for listener in list(self._listeners):
            listener(event)

    # -- watching ------------------------------------------------------------------------

    def watch(self, resource: ResourceKey, namespace: str | None, since: int | None) -> Watcher:
        """Subscribe; with ``since``, replay the history after it first (410 when too old)."""
        watcher = Watcher(resource, namespace, self._watch_queue)
        if since is not None:
            self.check_not_compacted(since)
            for event in self._history:
                if (
                    event.rv > since
                    and event.resource == resource
                    and (namespace is None or namespace == event.namespace)
                ):
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        watcher.close()

    def close_all_watchers(self) -> None:
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()

    def check_not_compacted(self, rv: int) -> None:
        """Raise 410 Gone when ``rv`` is older than what the history still holds."""
        if rv < self._history_floor:
            raise gone(rv, self._history_floor + 1)


def gone(rv: int, oldest: int) -> KubesimError:
    """kube-apiserver's answer to a resourceVersion older than its watch cache (reason Expired)."""
    return KubesimError(410, "Expired", f"too old resource version: {rv} ({oldest})")
