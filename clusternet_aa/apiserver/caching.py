"""A bounded time-to-live cache for review answers (TokenReview, SubjectAccessReview).

kube's delegating authenticator and authorizer cache the parent's answers for a few seconds so
that a burst of requests (kubectl discovery, a watch reconnect storm) costs one review, not
hundreds. Bounded so a flood of distinct tokens cannot grow memory without limit: the least
recently used entry goes first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """``get``/``put`` with a per-entry lifetime; at most ``max_size`` entries."""

    def __init__(self, max_size: int = 4096, *, clock: Callable[[], float] = time.monotonic):
        self.max_size = max_size
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) for a live entry, (False, None) otherwise."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class SingleFlight(Generic[K, V]):
    """Concurrent misses for the same key share one call to the parent.

    Without it, every request arriving while an entry is missing (a cold cache, an expiry, a
    thousand agents reconnecting with one token) sends its own identical review. The call runs
    as its own task, so a caller that goes away (the client hung up) does not cancel it for the
    others.
    """

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Task[V]] = {}

    async def do(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        return await asyncio.shield(task)

    def _forget(self, key: K, task: asyncio.Task[V]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not logged twice

    def __len__(self) -> int:
        return len(self._calls)
