"""The single-flight helper of the review caches."""

from __future__ import annotations

import asyncio

import pytest

from clusternet_aa.apiserver.caching import SingleFlight


async def test_one_call_serves_every_concurrent_caller() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def call() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    waiters = [asyncio.ensure_future(flight.do("k", call)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiters) == [42] * 20
    assert calls == 1
    assert len(flight) == 0  # forgotten once done: the next miss asks again
    assert await flight.do("k", call) == 42
    assert calls == 2


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    release = asyncio.Event()

    async def call() -> int:
        await release.wait()
        return 7

    first = asyncio.ensure_future(flight.do("k", call))
    second = asyncio.ensure_future(flight.do("k", call))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == 7
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_failures_reach_every_caller_and_are_not_kept() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def boom() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("parent down")

    results = await asyncio.gather(
        flight.do("k", boom), flight.do("k", boom), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert len(flight) == 0
