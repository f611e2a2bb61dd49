"""Lease leader election against kubesim: one leader, takeover, conflicts, release."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from clusternet_aa.kube import errors
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.leader_election import (
    LeaderElectionConfig,
    LeaderElector,
    acquire_lease,
)

NS = "clusternet-system"
NAME = "clusternet-controller-manager"


def config(identity: str, **overrides: object) -> LeaderElectionConfig:
    base = LeaderElectionConfig(
        namespace=NS,
        name=NAME,
        identity=identity,
        lease_duration=1.0,
        renew_deadline=0.6,
        retry_period=0.1,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
async def _namespace(kube: KubeClient) -> None:
    try:
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NS}})
    except errors.APIConflict:
        pass


async def get_lease(kube: KubeClient) -> dict[str, object]:
    return await kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}")


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Candidate:
    """An elector whose leading work records its state."""

    def __init__(self, kube: KubeClient, identity: str, **overrides: object) -> None:
        self.leading = asyncio.Event()
        self.stopped = asyncio.Event()
        self.leaders: list[str] = []
        self.elector = LeaderElector(
            kube,
            config(identity, **overrides),
            on_started_leading=self._lead,
            on_stopped_leading=self.stopped.set,
            on_new_leader=self.leaders.append,
        )
        self.task: asyncio.Task[None] = asyncio.create_task(self.elector.run())

    async def _lead(self) -> None:
        self.leading.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def test_a_single_candidate_acquires_and_renews(kube: KubeClient) -> None:
    one = Candidate(kube, "one")
    await asyncio.wait_for(one.leading.wait(), 5)
    assert one.elector.is_leader
    assert one.elector.leader_identity == "one"
    lease = await get_lease(kube)
    spec = lease["spec"]
    assert isinstance(spec, dict)
    assert spec["holderIdentity"] == "one"
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"].endswith("Z")
    assert "." in spec["renewTime"]
    first_renew = spec["renewTime"]
    await asyncio.sleep(0.3)
    spec2 = (await get_lease(kube))["spec"]
    assert isinstance(spec2, dict)
    assert spec2["renewTime"] != first_renew
    assert spec2["acquireTime"] == spec["acquireTime"]
    assert one.elector.lease is not None
    assert one.elector.lease["metadata"]["uid"]
    await one.stop()
    assert one.stopped.is_set()


async def test_two_candidates_one_leads_graceful_stop_hands_over_at_once(
    kube: KubeClient,
) -> None:
    a = Candidate(kube, "a")
    await asyncio.wait_for(a.leading.wait(), 5)
    b = Candidate(kube, "b")
    await asyncio.sleep(0.4)
    assert not b.leading.is_set()
    assert b.elector.leader_identity == "a"
    assert not b.elector.is_leader
    assert "a" in b.leaders
    loop = asyncio.get_running_loop()
    start = loop.time()
    await a.stop()  # releases the lease
    assert a.stopped.is_set()
    await asyncio.wait_for(b.leading.wait(), 5)
    assert loop.time() - start < 0.6  # well within the lease duration: released
    spec = (await get_lease(kube))["spec"]
    assert isinstance(spec, dict)
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1
    await b.stop()
    released = (await get_lease(kube))["spec"]
    assert isinstance(released, dict)
    assert released["holderIdentity"] == ""
    assert released["leaseDurationSeconds"] == 1


async def test_a_crashed_leader_is_replaced_within_the_lease_duration(kube: KubeClient) -> None:
    a = Candidate(kube, "a", release_on_cancel=False)  # a crash: no release
    await asyncio.wait_for(a.leading.wait(), 5)
    b = Candidate(kube, "b")
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await a.stop()
    assert (await get_lease(kube))["spec"]["holderIdentity"] == "a"  # type: ignore[index]
    await asyncio.wait_for(b.leading.wait(), 5)
    took = loop.time() - start
    assert 0.5 < took < 1.0 + 0.5  # waited for expiry, not much longer
    await b.stop()


async def test_racing_candidates_cannot_both_win(kube: KubeClient) -> None:
    electors = [LeaderElector(kube, config(f"c{i}")) for i in range(6)]
    # no lease yet: all create at once, one wins
    results = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
    assert sum(results) == 1
    winner = electors[results.index(True)].config.identity
    assert (await get_lease(kube))["spec"]["holderIdentity"] == winner  # type: ignore[index]
    # free the lease: all update at once from the same resourceVersion, one wins
    lease = await get_lease(kube)
    lease["spec"]["holderIdentity"] = ""  # type: ignore[index]
    await kube.request(
        "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}", body=lease
    )
    results = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
    assert sum(results) == 1


async def test_a_stale_resource_version_is_a_conflict(kube: KubeClient) -> None:
    elector = LeaderElector(kube, config("x"))
    assert await elector.try_acquire_or_renew()
    stale = await get_lease(kube)
    assert await elector.try_acquire_or_renew()  # renews: a new resourceVersion
    stale["spec"]["holderIdentity"] = "thief"  # type: ignore[index]
    with pytest.raises(errors.APIConflict):
        await kube.request(
            "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}", body=stale
        )


async def test_a_leader_that_loses_the_lease_steps_down(kube: KubeClient) -> None:
    stopped = asyncio.Event()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def lead() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    elector = LeaderElector(
        kube, config("victim"), on_started_leading=lead, on_stopped_leading=stopped.set
    )
    task = asyncio.create_task(elector.run())
    await asyncio.wait_for(started.wait(), 5)
    # someone else takes the lease by force (admin edit; retried on conflicts with renewals)
    while True:
        lease = await get_lease(kube)
        lease["spec"]["holderIdentity"] = "usurper"  # type: ignore[index]
        lease["spec"]["leaseDurationSeconds"] = 60  # type: ignore[index]
        try:
            await kube.request(
                "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{NAME}", body=lease
            )
            break
        except errors.APIConflict:
            continue
    await asyncio.wait_for(task, 3)  # run() returns: leadership lost
    assert stopped.is_set()
    assert cancelled.is_set()
    assert not elector.is_leader
    # and it did not release someone else's lease
    assert (await get_lease(kube))["spec"]["holderIdentity"] == "usurper"  # type: ignore[index]


async def test_run_can_be_repeated_after_the_work_returns(kube: KubeClient) -> None:
    runs = 0

    async def lead() -> None:
        nonlocal runs
        runs += 1

    elector = LeaderElector(kube, config("again"), on_started_leading=lead)
    await asyncio.wait_for(elector.run(), 5)
    await asyncio.wait_for(elector.run(), 5)
    assert runs == 2


async def test_acquire_lease_returns_the_lease_object(kube: KubeClient) -> None:
    lease = await asyncio.wait_for(acquire_lease(kube, config("solo")), 5)
    assert lease["spec"]["holderIdentity"] == "solo"
    assert lease["metadata"]["uid"]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="leaseDuration"):
        config("x", lease_duration=0.5).validate()
    with pytest.raises(ValueError, match="renewDeadline"):
        config("x", retry_period=0.5).validate()
    with pytest.raises(ValueError, match="identity"):
        config("").validate()
