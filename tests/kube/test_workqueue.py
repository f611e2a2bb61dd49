"""The work queue: dedup, no concurrent processing of a key, delays, rate limits, shutdown."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from clusternet_aa.kube.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    ShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)


async def test_keys_are_deduplicated_while_queued() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("a", "b", "a", "a", "b", "c"):
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_a_key_being_processed_is_requeued_once_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    assert queue.is_processing("a")
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0  # dirty, not handed out while processing
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_no_key_is_processed_concurrently_by_many_workers() -> None:
    queue: WorkQueue[int] = WorkQueue()
    active: set[int] = set()
    processed: list[int] = []
    overlap = False

    async def worker() -> None:
        nonlocal overlap
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                if key in active:
                    overlap = True
                active.add(key)
                await asyncio.sleep(0.001)
                processed.append(key)
                active.discard(key)
            finally:
                queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    for _round in range(20):
        for key in range(5):
            queue.add(key)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    queue.shutdown()
    await asyncio.gather(*workers)
    assert not overlap
    assert set(processed) == set(range(5))
    # dedup: far fewer runs than adds (100)
    assert len(processed) < 100


async def test_get_waits_for_an_add() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.add("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_a_cancelled_getter_does_not_swallow_a_wakeup() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("x")
    first.cancel()
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second, 1) == "x"


async def test_add_after_delays_and_keeps_the_earliest_deadline() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("late", 0.05)
    queue.add_after("late", 10)  # later deadline: ignored
    assert len(queue) == 0
    assert queue.waiting == 1
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(queue.get(), 1) == "late"
    assert 0.04 <= loop.time() - start < 1
    queue.done("late")
    queue.add_after("soon", 10)
    queue.add_after("soon", 0.01)  # earlier deadline wins
    assert await asyncio.wait_for(queue.get(), 1) == "soon"
    queue.add_after("now", 0)
    assert len(queue) == 1


async def test_add_after_of_a_queued_key_does_not_duplicate() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("k")
    queue.add_after("k", 0.01)
    assert await queue.get() == "k"
    await asyncio.sleep(0.03)
    # the delayed add fired while "k" was processing: it is dirty, queued on done
    assert len(queue) == 0
    queue.done("k")
    assert len(queue) == 1


def test_item_backoff_grows_exponentially_to_the_cap_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert delays[-1] == 1000.0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert limiter.num_requeues("a") == 20
    assert limiter.when("b") == pytest.approx(0.005)  # per item
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    for _ in range(200):
        limiter.when("c")
    assert limiter.when("c") == 1000.0


def test_token_bucket_allows_a_burst_then_spaces_requests() -> None:
    bucket = BucketRateLimiter(qps=10, burst=3)
    assert [bucket.when(i) for i in range(3)] == [0, 0, 0]
    fourth = bucket.when(3)
    fifth = bucket.when(4)
    assert fourth == pytest.approx(0.1, abs=0.02)
    assert fifth == pytest.approx(0.2, abs=0.02)


def test_default_limiter_is_the_max_of_both() -> None:
    limiter = default_controller_rate_limiter()
    assert limiter.when("a") == pytest.approx(0.005)
    combo = MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.001, 1.0), BucketRateLimiter(qps=1, burst=1)
    )
    assert combo.when("a") == pytest.approx(0.001)
    assert combo.when("b") == pytest.approx(1.0, abs=0.05)  # bucket exhausted
    assert combo.num_requeues("a") == 1
    combo.forget("a")
    assert combo.num_requeues("a") == 0


async def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(rate_limiter=ItemExponentialFailureRateLimiter(0.01, 0.08))
    loop = asyncio.get_running_loop()
    waits = []
    for _ in range(4):
        start = loop.time()
        queue.add_rate_limited("k")
        key = await asyncio.wait_for(queue.get(), 1)
        waits.append(loop.time() - start)
        queue.done(key)
    assert queue.num_requeues("k") == 4
    assert waits[3] > waits[0]
    assert waits[3] >= 0.075
    queue.forget("k")
    assert queue.num_requeues("k") == 0


async def test_shutdown_wakes_getters_and_drains() -> None:
    queue: WorkQueue[str] = WorkQueue()
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(getter, 1)
    assert queue.shutting_down
    queue.add("ignored")
    queue.add_after("ignored", 0.01)
    assert len(queue) == 0
    assert queue.waiting == 0

    draining: WorkQueue[str] = WorkQueue()
    draining.add("left")
    draining.add_after("delayed", 10)
    draining.shutdown()
    assert await draining.get() == "left"  # queued keys are still handed out
    with pytest.raises(ShutDown):
        await draining.get()
