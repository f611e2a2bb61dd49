"""A rate-limited work queue of keys, as client-go's ``workqueue`` (asyncio, one event loop).

Controllers put *keys* (``"namespace/name"`` strings, or any hashable) in the queue from
informer callbacks and take them out in worker tasks. The queue guarantees what a
level-triggered reconcile loop needs:

* **dedup**: a key added several times before a worker takes it is handed out once;
* **no concurrent processing of a key**: while a worker holds a key (between :meth:`get` and
  :meth:`done`), adding it again only marks it *dirty*; it is queued again by :meth:`done`;
* **delays**: :meth:`add_after` queues a key later (the earliest pending time wins);
* **rate limiting**: :meth:`add_rate_limited` asks the :class:`RateLimiter` how long to wait.
  The default limiter is client-go's ``DefaultControllerRateLimiter``: the max of a per-key
  exponential backoff (5 ms doubling up to 1000 s) and an overall token bucket (10 qps, burst
  100). :meth:`forget` resets a key's backoff after a success.

Stable API (the agent and the controllers import it)::

    queue: WorkQueue[str] = WorkQueue(name="crrapprover")      # rate_limiter=... optional
    queue.add(key)                  # now (deduplicated)
    queue.add_after(key, seconds)   # later; <= 0 means now
    queue.add_rate_limited(key)     # after rate_limiter.when(key)
    queue.forget(key)               # reset the key's failure count
    queue.num_requeues(key)         # failures counted for the key
    key = await queue.get()         # raises ShutDown once shut down and drained
    queue.done(key)                 # always, in a finally
    queue.shutdown()                # wakes getters; later adds are ignored
    len(queue), queue.shutting_down

Rate limiters: :class:`ItemExponentialFailureRateLimiter`, :class:`BucketRateLimiter`,
:class:`MaxOfRateLimiter`, :func:`default_controller_rate_limiter`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from clusternet_aa.errors import ClusternetError

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "ShutDown",
    "WorkQueue",
    "default_controller_rate_limiter",
]

T = TypeVar("T", bound=Hashable)


class ShutDown(ClusternetError):
    """:meth:`WorkQueue.get` on a queue that was shut down and has nothing left."""


class RateLimiter(Protocol):
    """How long a key waits before it is retried (client-go's ``TypedRateLimiter``)."""

    def when(self, item: Hashable) -> float:
        """Seconds to wait before ``item`` is processed again; counts a failure."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking ``item`` (it succeeded)."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """Failures counted for ``item`` since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter:
    """``base_delay * 2**failures``, capped at ``max_delay``, per item."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures > 64:  # 2**64 overflows any sane cap anyway
            return self.max_delay
        return min(self.max_delay, self.base_delay * (2.0**failures))

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket (``golang.org/x/time/rate``): ``qps`` refill, ``burst`` size.

    Each :meth:`when` reserves one token; the delay is how long until that token exists.
    It does not track items, so :meth:`forget` is a no-op.
    """

    def __init__(self, qps: float = 10.0, burst: int = 100) -> None:
        if qps <= 0 or burst <= 0:
            raise ValueError("qps and burst must be positive")
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def when(self, item: Hashable) -> float:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: Hashable) -> None:
        return None

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters (each counts the failure)."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("at least one rate limiter is needed")
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter() -> MaxOfRateLimiter:
    """client-go's ``DefaultControllerRateLimiter``: 5 ms..1000 s per item, 10 qps burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100)
    )


class WorkQueue(Generic[T]):
    """A FIFO of unique keys with processing/dirty sets, delays and rate limiting.

    Must be used from one event loop; create it inside the loop that runs the workers.
    """

    def __init__(self, *, name: str = "", rate_limiter: RateLimiter | None = None) -> None:
        self.name = name
        self.rate_limiter: RateLimiter = rate_limiter or default_controller_rate_limiter()
        self._queue: collections.deque[T] = collections.deque()
        #: Keys that need processing: queued, or re-added while being processed.
        self._dirty: set[T] = set()
        #: Keys handed out by get() and not done() yet.
        self._processing: set[T] = set()
        #: Delayed keys: (deadline on the loop clock, timer).
        self._waiting: dict[T, tuple[float, asyncio.TimerHandle]] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutting_down = False

    # -- adding --------------------------------------------------------------------------

    def add(self, item: T) -> None:
        """Queue ``item`` unless it is already queued; if it is being processed, mark it dirty."""
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return
        self._queue.append(item)
        self._wake_one()

    def add_after(self, item: T, delay: float) -> None:
        """Queue ``item`` after ``delay`` seconds; an earlier pending deadline wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        pending = self._waiting.get(item)
        if pending is not None:
            if pending[0] <= deadline:
                return
            pending[1].cancel()
        handle = loop.call_at(deadline, self._fire, item)
        self._waiting[item] = (deadline, handle)

    def add_rate_limited(self, item: T) -> None:
        """Queue ``item`` after the delay the rate limiter gives it (counts a failure)."""
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Reset ``item``'s failure count (call it after a successful reconcile)."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)

    def _fire(self, item: T) -> None:
        self._waiting.pop(item, None)
        self.add(item)

    # -- taking --------------------------------------------------------------------------

    async def get(self) -> T:
        """The next key, waiting for one; :class:`ShutDown` once shut down and empty."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(f"work queue {self.name!r} is shut down")
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # a wake-up meant for this getter must go to another one
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        """Mark ``item`` processed; if it was re-added meanwhile, queue it again."""
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_one()

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- lifecycle -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting keys, drop delayed ones and wake every getter."""
        self._shutting_down = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (not the delayed or the in-flight ones)."""
        return len(self._queue)

    @property
    def waiting(self) -> int:
        """Keys scheduled for later."""
        return len(self._waiting)

    def is_processing(self, item: T) -> bool:
        return item in self._processing
