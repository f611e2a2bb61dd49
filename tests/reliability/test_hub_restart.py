"""Restart (SIGKILL, start again on the same port) the hub with many lightweight agents connected.

Every agent must be back within 60 s without any manual step, and the reconnects must be spread
by the agents' jittered backoff (the product default: 1 s doubling to 30 s, full jitter), not
arrive as one thundering herd. N is 1,000 with ``CLUSTERNET_SCALE=full`` and 200 by default;
the agents live in a few helper processes, each dialing the hub directly with its own cluster
id, authorized by real RBAC in the parent (see ``harness``).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import statistics
import time
from pathlib import Path

import pytest

from tests.reliability import harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N = harness.scaled(1000, 200)
PROCESSES = harness.scaled(4, 2)
#: No 100 ms window may hold more than this share of the reconnects. A herd (no jitter) puts
#: nearly all in one or two windows; with jitter the busiest one is the burst of dials that
#: queued in the listen backlog while the new hub was starting (about 10% measured).
MAX_BUCKET_SHARE = 0.25


@pytest.mark.timeout(240)
async def test_all_agents_come_back_after_a_hub_restart_spread_by_jitter(tmp_path: Path) -> None:
    async with harness.running_world(tmp_path) as world:
        hub = world.hub
        assert hub is not None
        per = N // PROCESSES
        groups = [
            await world.start_agents(
                count=per, first=i * per, prefix="lw", backoff=(1.0, 30.0), stagger=0.005
            )
            for i in range(PROCESSES)
        ]
        ids = {f"lw-{i:05d}" for i in range(per * PROCESSES)}

        async def all_connected() -> bool:
            return await hub.tunnels() == len(ids)

        connected_in = await harness.eventually(all_connected, within=120, every=0.25)
        rss_before = hub.rss_kib()

        hub.proc.kill()  # type: ignore[union-attr]  # a crash: no GOAWAY
        killed = time.time()
        world.start_hub(hub.port)
        restarted = time.time()
        new_hub = world.hub
        assert new_hub is not None
        await new_hub.wait_ready()
        ready = time.time()

        async def all_back() -> bool:
            return await new_hub.tunnels() == len(ids)

        await harness.eventually(all_back, within=90, every=0.25)

        first_up: dict[str, float] = {}

        async def all_logged_up() -> bool:
            # The hub counts a tunnel as soon as it has accepted it; the agent process logs
            # "up" from a watcher polling every 10 ms, so its log may trail the hub briefly.
            first_up.clear()
            for group in groups:
                for event in group.events():
                    if event["ev"] == "up" and event["t"] > killed:
                        first_up.setdefault(event["id"], event["t"])
            return set(first_up) == ids

        await harness.eventually(all_logged_up, within=10, every=0.1)
        assert set(first_up) == ids  # every agent came back by itself
        delays = sorted(t - killed for t in first_up.values())
        buckets = collections.Counter(int((t - killed) * 10) for t in first_up.values())
        busiest = max(buckets.values())
        figures = {
            "agents": len(ids),
            "processes": PROCESSES,
            "initial_connect_s": round(connected_in, 2),
            "hub_restart_to_ready_s": round(ready - restarted, 2),
            "back_after_kill_s": {
                "min": round(delays[0], 2),
                "p50": round(statistics.median(delays), 2),
                "p90": round(delays[int(0.9 * len(delays))], 2),
                "max": round(delays[-1], 2),
            },
            "busiest_100ms_bucket": busiest,
            "busiest_share": round(busiest / len(ids), 3),
            "buckets_used": len(buckets),
            "hub_rss_mib_before": round(rss_before / 1024, 1),
            "hub_rss_mib_after": round(new_hub.rss_kib() / 1024, 1),
        }
        harness.report("hub restart", **figures)
        assert delays[-1] < 60, figures
        assert busiest <= max(5, MAX_BUCKET_SHARE * len(ids)), figures
        assert delays[int(0.9 * len(delays))] - delays[int(0.1 * len(delays))] > 1.0, figures
        # No reconnect loops afterwards: each agent holds exactly one live tunnel.
        await asyncio.sleep(1)
        assert await new_hub.tunnels() == len(ids)
        for group in groups:
            stats = await group.stats()
            assert stats["connected"] == per
        for group in groups:
            group.proc.signal(signal.SIGTERM)
