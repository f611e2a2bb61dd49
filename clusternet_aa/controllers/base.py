"""The reconcile loop every controller shares: informers -> work queue -> ``reconcile(key)``.

A controller is level-triggered: informer callbacks only turn events into *keys*
(``"namespace/name"``, or ``"name"`` for cluster-scoped objects) in a rate-limited
:class:`~clusternet_aa.kube.workqueue.WorkQueue`; workers take keys and call
:meth:`Controller.reconcile`, which reads the current state and converges it, so a missed or
repeated event is harmless. The outcome of one reconcile decides what happens to the key:

* returns normally: the key's backoff is reset (``forget``);
* raises :class:`TemporaryError` with a ``delay``: the key comes back after that delay
  (``add_after``; the backoff is reset: the delay is a decision, not a failure);
  without a delay it backs off (``add_rate_limited``);
* raises :class:`PermanentError`: logged, not retried until the next event;
* raises :class:`~clusternet_aa.kube.errors.KubeError` or anything else: logged and retried
  with exponential backoff (5 ms doubling up to ``max_backoff``).

Periodic work (a heartbeat deadline) is done with ``queue.add_after(key, seconds)`` from
``reconcile``, never with a polling loop.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from clusternet_aa.errors import ClusternetError
from clusternet_aa.kube import errors
from clusternet_aa.kube.informers import EventType, Informer
from clusternet_aa.kube.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    ShutDown,
    WorkQueue,
)

__all__ = ["Controller", "PermanentError", "TemporaryError", "object_key", "split_key"]

Obj = dict[str, Any]


class ControllerError(ClusternetError):
    """A reconcile outcome that is not a plain success."""


class TemporaryError(ControllerError):
    """Try again: after ``delay`` seconds if given, else with the key's backoff."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(ControllerError):
    """Retrying the same state will not help; wait for the object to change."""


def object_key(obj: Obj) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or "")
    namespace = str(metadata.get("namespace") or "")
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a key (namespace "" for cluster-scoped)."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


class Controller(abc.ABC):
    """Informers feeding a work queue drained by ``workers`` tasks; ``await run()``.

    Subclasses create their informers in ``__init__`` (pass them to ``super().__init__``),
    route events to keys with :meth:`enqueue` (the default handler enqueues the object's own
    key) and implement :meth:`reconcile`.
    """

    #: Controller name, as Clusternet's ``--controllers`` list names it.
    name: str = "controller"

    def __init__(
        self,
        informers: Sequence[Informer],
        *,
        workers: int = 2,
        max_backoff: float = 1000.0,
        sync_timeout: float | None = None,
    ) -> None:
        self.logger = logging.getLogger(f"clusternet_aa.controllers.{self.name}")
        self.informers = list(informers)
        self.workers = workers
        self.sync_timeout = sync_timeout
        self.queue: WorkQueue[str] = WorkQueue(
            name=self.name,
            rate_limiter=MaxOfRateLimiter(
                ItemExponentialFailureRateLimiter(0.005, max_backoff),
                BucketRateLimiter(10.0, 100),
            ),
        )

    # -- events --------------------------------------------------------------------------

    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def on_event(self, kind: EventType, obj: Obj) -> None:
        """Default informer handler: the object's own key."""
        self.enqueue(object_key(obj))

    # -- the loop ------------------------------------------------------------------------

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None:
        """Converge the world for ``key``; idempotent; raise to be retried."""

    async def run(self) -> None:
        """Start informers, wait for their first list, process keys until cancelled."""
        for informer in self.informers:
            informer.start()
        workers: list[asyncio.Task[None]] = []
        try:
            for informer in self.informers:
                if not await informer.wait_synced(self.sync_timeout):
                    raise ControllerError(f"{self.name}: {informer.resource} did not sync")
            self.logger.info("%s: caches synced, starting %d workers", self.name, self.workers)
            workers = [
                asyncio.create_task(self._worker(), name=f"{self.name} worker {i}")
                for i in range(self.workers)
            ]
            await asyncio.gather(*workers)
        finally:
            self.queue.shutdown()
            for task in workers:
                task.cancel()
            for task in workers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for informer in self.informers:
                await informer.stop()

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: str) -> None:
        """One reconcile of ``key`` and what its outcome means for the queue."""
        try:
            await self.reconcile(key)
        except TemporaryError as exc:
            if exc.delay is not None:
                self.logger.debug("%s %s: %s; again in %.2fs", self.name, key, exc, exc.delay)
                self.queue.forget(key)
                self.queue.add_after(key, exc.delay)
            else:
                self.logger.info("%s %s: %s; retrying", self.name, key, exc)
                self.queue.add_rate_limited(key)
        except PermanentError as exc:
            self.logger.error("%s %s: %s", self.name, key, exc)
            self.queue.forget(key)
        except errors.KubeError as exc:
            self.logger.warning("%s %s: %s; retrying", self.name, key, exc)
            self.queue.add_rate_limited(key)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad key must not kill the worker
            self.logger.exception("%s %s: reconcile failed", self.name, key)
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
