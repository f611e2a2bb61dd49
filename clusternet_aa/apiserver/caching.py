"""A bounded time-to-live cache for review answers (TokenReview, SubjectAccessReview).

kube's delegating authenticator and authorizer cache the parent's answers for a few seconds so
that a burst of requests (kubectl discovery, a watch reconnect storm) costs one review, not
hundreds. Bounded so a flood of distinct tokens cannot grow memory without limit: the least
recently used entry goes first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
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
