"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection``.

Candidates share one Lease. The holder writes ``spec.holderIdentity`` and refreshes
``spec.renewTime`` every ``retry_period``; a candidate may take the Lease when it is free
(empty holder, e.g. released on a graceful stop) or when the record it observed has not
changed for ``lease_duration`` seconds *of its own clock* (no cross-host clock comparison, as
client-go). Every write is a create or a PUT carrying the resourceVersion that was read, so two
candidates racing for the Lease cannot both win: the loser gets 409 Conflict and stays a
follower. A leader that cannot renew within ``renew_deadline`` steps down.

Lease fields written: ``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``,
``renewTime`` (MicroTime, ``...T10:00:00.000000Z``), ``leaseTransitions`` (incremented each time
the holder changes). Releasing (on cancellation of :meth:`LeaderElector.run`, when
``release_on_cancel``) writes an empty holder with ``leaseDurationSeconds: 1``, as client-go.

Stable API (the controller-manager and the agent import it)::

    config = LeaderElectionConfig(
        namespace="clusternet-system", name="clusternet-controller-manager",
        identity=default_identity(),     # hostname_<uuid>, like Kubernetes components
        lease_duration=15.0, renew_deadline=10.0, retry_period=2.0, release_on_cancel=True,
    )
    elector = LeaderElector(
        kube, config,
        on_started_leading=lead,         # async def lead() -> None; cancelled on loss/stop
        on_stopped_leading=stopped,      # optional; sync or async; always called after leading
        on_new_leader=seen,              # optional; def seen(identity: str) -> None
    )
    await elector.run()   # returns after leadership was lost (or `lead` returned);
                          # cancel it to stop (the Lease is released if held)
    elector.is_leader, elector.leader_identity
    elector.lease         # the last Lease object read or written (dict), e.g. its metadata.uid

    # or, without callbacks:
    await acquire_lease(kube, config)  -> the Lease dict once held (keep renewing with run())

``run()`` may be called again after it returns (the agent re-runs its work when it regains
leadership).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient, resource_path

__all__ = [
    "LeaderElectionConfig",
    "LeaderElector",
    "LeaseRecord",
    "acquire_lease",
    "default_identity",
]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]
StartedCallback = Callable[[], Awaitable[None]]
StoppedCallback = Callable[[], Awaitable[None] | None]
NewLeaderCallback = Callable[[str], None]


def default_identity() -> str:
    """``<hostname>_<uuid>``, the identity Kubernetes components use."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_micro_time(value: dt.datetime) -> str:
    """``metav1.MicroTime``: RFC 3339 with microseconds, UTC."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, kw_only=True)
class LeaderElectionConfig:
    """Where the Lease is and how the election is timed (client-go's defaults)."""

    #: Namespace of the Lease.
    namespace: str
    #: Name of the Lease (Clusternet: the component's name).
    name: str
    #: This candidate's identity, unique among candidates.
    identity: str
    #: Seconds a follower waits after the last observed change before taking over.
    lease_duration: float = 15.0
    #: Seconds a leader keeps retrying a failed renewal before stepping down.
    renew_deadline: float = 10.0
    #: Seconds between attempts (acquire and renew).
    retry_period: float = 2.0
    #: Release the Lease when :meth:`LeaderElector.run` is cancelled.
    release_on_cancel: bool = True
    #: Budget of one API request.
    request_timeout: float = 10.0

    def validate(self) -> None:
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("leaseDuration must be greater than renewDeadline")
        if self.renew_deadline <= self.retry_period * 1.2:
            raise ValueError("renewDeadline must be greater than retryPeriod*JitterFactor")
        if self.retry_period < 0.01:
            raise ValueError("retryPeriod is too small")
        if not self.identity:
            raise ValueError("leader election requires an identity")
        if not self.name or not self.namespace:
            raise ValueError("leader election requires a lease namespace and name")

    @property
    def path(self) -> str:
        return resource_path(
            "coordination.k8s.io", "v1", "leases", namespace=self.namespace, name=self.name
        )

    @property
    def collection_path(self) -> str:
        return resource_path("coordination.k8s.io", "v1", "leases", namespace=self.namespace)


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str = ""
    renew_time: str = ""
    lease_transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Obj) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=str(spec.get("acquireTime") or ""),
            renew_time=str(spec.get("renewTime") or ""),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> Obj:
        spec: Obj = {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "leaseTransitions": self.lease_transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


class LeaderElector:
    """One candidate. See the module docstring for the protocol and the API."""

    def __init__(
        self,
        kube: KubeClient,
        config: LeaderElectionConfig,
        *,
        on_started_leading: StartedCallback | None = None,
        on_stopped_leading: StoppedCallback | None = None,
        on_new_leader: NewLeaderCallback | None = None,
    ) -> None:
        config.validate()
        self.kube = kube
        self.config = config
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.on_new_leader = on_new_leader
        #: The last Lease object read or written.
        self.lease: Obj | None = None
        self._observed = LeaseRecord()
        self._observed_at = 0.0  # loop clock
        self._reported_leader = ""
        self._leading = False

    # -- state ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this candidate holds the Lease as far as it last observed."""
        return self._leading and self._observed.holder_identity == self.config.identity

    @property
    def leader_identity(self) -> str:
        """The holder last observed ("" when free or unknown)."""
        return self._observed.holder_identity

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead (run ``on_started_leading``), renew; return when leadership ends.

        Cancel it to stop: the leading task is cancelled, the Lease released (when
        ``release_on_cancel``) and ``on_stopped_leading`` called.
        """
        await self._acquire()
        self._leading = True
        logger.info(
            "successfully acquired lease %s/%s as %s",
            self.config.namespace,
            self.config.name,
            self.config.identity,
        )
        work: asyncio.Task[None] | None = None
        renewing = asyncio.create_task(self._renew_loop(), name="lease renewal")
        try:
            if self.on_started_leading is not None:
                work = asyncio.create_task(self._lead(), name="leading")
                await asyncio.wait({work, renewing}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await renewing
        except asyncio.CancelledError:
            try:
                await self._stop_tasks(work, renewing)
                if self.config.release_on_cancel:
                    await asyncio.shield(self.release())
            finally:
                self._leading = False
                await self._stopped()
            raise
        await self._stop_tasks(work, renewing)
        lost = renewing.done() and not renewing.cancelled()
        if lost:
            logger.warning("leader election lost: %s/%s", self.config.namespace, self.config.name)
        elif self.config.release_on_cancel:
            await self.release()
        self._leading = False
        await self._stopped()
        if work is not None and work.done() and not work.cancelled():
            exc = work.exception()
            if exc is not None:
                raise exc

    async def _lead(self) -> None:
        assert self.on_started_leading is not None
        await self.on_started_leading()

    @staticmethod
    async def _stop_tasks(*tasks: asyncio.Task[None] | None) -> None:
        pending = [task for task in tasks if task is not None and not task.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _stopped(self) -> None:
        if self.on_stopped_leading is None:
            return
        result = self.on_stopped_leading()
        if inspect.isawaitable(result):
            await result

    async def _acquire(self) -> None:
        """Retry every ``retry_period`` until the Lease is ours."""
        logger.info("attempting to acquire lease %s/%s", self.config.namespace, self.config.name)
        while True:
            if await self.try_acquire_or_renew():
                return
            await asyncio.sleep(self.config.retry_period)

    async def _renew_loop(self) -> None:
        """Renew every ``retry_period``; return when a renewal misses ``renew_deadline``."""
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + self.config.renew_deadline
            renewed = False
            while loop.time() < deadline:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result
                # and swallows a cancellation that arrives as the attempt completes, and this
                # loop would then renew on forever under a caller that asked it to stop.
                try:
                    async with asyncio.timeout(max(0.01, deadline - loop.time())):
                        renewed = await self.try_acquire_or_renew()
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                if self._observed.holder_identity not in ("", self.config.identity):
                    break  # someone else holds it now: no point retrying
                await asyncio.sleep(min(self.config.retry_period, max(0, deadline - loop.time())))
            if not renewed:
                return
            await asyncio.sleep(self.config.retry_period)

    # -- one attempt ---------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One read-check-write round; True when this candidate holds the Lease afterwards."""
        loop = asyncio.get_running_loop()
        now = _now()
        stamp = format_micro_time(now)
        timeout = self.config.request_timeout
        try:
            lease = await self.kube.request("GET", self.config.path, request_timeout=timeout)
        except errors.APINotFound:
            record = LeaseRecord(
                holder_identity=self.config.identity,
                lease_duration_seconds=self._duration_seconds(),
                acquire_time=stamp,
                renew_time=stamp,
                lease_transitions=0,
            )
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                "spec": record.to_spec(),
            }
            try:
                created = await self.kube.request(
                    "POST", self.config.collection_path, body=body, request_timeout=timeout
                )
            except errors.KubeError as exc:
                logger.info("error initially creating lease lock: %s", exc)
                return False
            self._observe(created, loop.time())
            return True
        except errors.KubeError as exc:
            logger.info("error retrieving lease %s: %s", self.config.name, exc)
            return False

        old = LeaseRecord.from_lease(lease)
        self._observe(lease, loop.time())
        identity = self.config.identity
        held_by_other = old.holder_identity not in ("", identity)
        if held_by_other and self._observed_at + self._expiry(old) > loop.time():
            logger.debug("lease is held by %s and has not yet expired", old.holder_identity)
            return False
        mine = old.holder_identity == identity
        record = LeaseRecord(
            holder_identity=identity,
            lease_duration_seconds=self._duration_seconds(),
            acquire_time=(old.acquire_time or stamp) if mine else stamp,
            renew_time=stamp,
            lease_transitions=old.lease_transitions if mine else old.lease_transitions + 1,
        )
        # the updated object keeps metadata (resourceVersion: optimistic concurrency)
        body = dict(lease)
        body["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
        try:
            updated = await self.kube.request(
                "PUT", self.config.path, body=body, request_timeout=timeout
            )
        except errors.APIConflict:
            logger.debug("lease %s changed under us (conflict)", self.config.name)
            return False
        except errors.KubeError as exc:
            logger.info("failed to update lease %s: %s", self.config.name, exc)
            return False
        self._observe(updated, loop.time())
        return True

    def _duration_seconds(self) -> int:
        return max(1, round(self.config.lease_duration))

    def _expiry(self, record: LeaseRecord) -> float:
        """How long an observed record stays valid: the Lease's own duration, else ours."""
        if record.lease_duration_seconds > 0:
            return float(record.lease_duration_seconds)
        return self.config.lease_duration

    def _observe(self, lease: Obj, at: float) -> None:
        record = LeaseRecord.from_lease(lease)
        self.lease = lease
        if record != self._observed:
            self._observed = record
            self._observed_at = at
        if record.holder_identity != self._reported_leader:
            self._reported_leader = record.holder_identity
            if record.holder_identity:
                if record.holder_identity != self.config.identity:
                    logger.info("new leader elected: %s", record.holder_identity)
                if self.on_new_leader is not None:
                    try:
                        self.on_new_leader(record.holder_identity)
                    except Exception:  # a callback must not break the election
                        logger.exception("on_new_leader callback failed")

    async def release(self) -> bool:
        """Give the Lease up if this candidate holds it (empty holder, duration 1 s).

        Reads the Lease again first: a renewal cancelled in flight may have moved its
        resourceVersion past the one last seen. A Lease held by someone else is left alone.
        """
        if self._observed.holder_identity != self.config.identity:
            return False
        timeout = self.config.request_timeout
        for _attempt in range(3):
            try:
                lease = await self.kube.request("GET", self.config.path, request_timeout=timeout)
                current = LeaseRecord.from_lease(lease)
                if current.holder_identity != self.config.identity:
                    self._observe(lease, asyncio.get_running_loop().time())
                    return False
                stamp = format_micro_time(_now())
                record = LeaseRecord(
                    holder_identity="",
                    lease_duration_seconds=1,
                    acquire_time=stamp,
                    renew_time=stamp,
                    lease_transitions=current.lease_transitions,
                )
                body = dict(lease)
                body["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
                updated = await self.kube.request(
                    "PUT", self.config.path, body=body, request_timeout=timeout
                )
            except errors.APIConflict:
                continue
            except errors.KubeError as exc:
                logger.warning("failed to release lease %s: %s", self.config.name, exc)
                return False
            self._observe(updated, asyncio.get_running_loop().time())
            logger.info("released lease %s/%s", self.config.namespace, self.config.name)
            return True
        logger.warning("failed to release lease %s: conflicts", self.config.name)
        return False


async def acquire_lease(kube: KubeClient, config: LeaderElectionConfig) -> Obj:
    """Block until ``config.identity`` holds the Lease once; the Lease object.

    For one-off needs (reading the Lease uid as a cluster id); use :class:`LeaderElector`
    to keep holding it.
    """
    elector = LeaderElector(kube, config)
    await elector._acquire()
    assert elector.lease is not None
    return elector.lease
