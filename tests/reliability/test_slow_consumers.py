"""Slow consumers: clients that stop reading large responses, and one that reads 1 byte/s.

Without flow control the hub would buffer whatever the agent sends (here 64 MiB per client).
With it, each stalled stream holds at most its stream window (256 KiB) unread in the tunnel
plus what the client connection's write buffers take before the forwarder's writes wait, so the
hub process's RSS grows by a constant per stalled client (``PER_STREAM_BOUND``, see there), reaches
a plateau within a few seconds, and stays there whatever the clients do; other requests on the
same tunnel still flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from tests.reliability import harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTER = "slow-0001"
SLOW_CLIENTS = harness.scaled(200, 40)
BODY = 64 * 1024 * 1024
#: 256 KiB stream window + 256 KiB high-water, plus the client connection's write path: the
#: forwarder writes what it read from the window (up to 256 KiB) into the TLS transport, which
#: holds it as plaintext and then ciphertext until the socket takes it; plus allocator slack.
#: Measured: about 1.7 MiB per stalled stream, flat over time, for 64 MiB bodies.
PER_STREAM_BOUND = 2 * 1024 * 1024
#: Fixed allowance for the connections themselves (TLS state, aiohttp handlers, 40-200 of them).
FIXED_BOUND = 24 * 1024 * 1024


@pytest.mark.timeout(300 if harness.scale() == "full" else 90)
async def test_hub_memory_stays_bounded_by_the_windows(tmp_path: Path) -> None:
    async with harness.running_world(tmp_path, backend=True) as world:
        hub = world.hub
        assert hub is not None
        agents = await world.start_agents([CLUSTER])
        await world.wait_connected(CLUSTER)
        headers = world.auth(harness.ADMIN_TOKEN)
        url = world.backend_url(CLUSTER, f"blob?size={BODY}")
        await asyncio.sleep(0.5)
        rss_before = hub.rss_kib() * 1024
        stack = contextlib.AsyncExitStack()
        trickle_read = 0
        try:
            client = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=world.hub_ssl(), limit=0),
                    read_bufsize=2**14,
                )
            )
            stalled = [
                await stack.enter_async_context(client.get(url, headers=headers))
                for _ in range(SLOW_CLIENTS)
            ]
            for response in stalled:  # each takes a little, then never reads again
                assert response.status == 200
                await response.content.read(1000)

            trickle = await stack.enter_async_context(client.get(url, headers=headers))

            async def one_byte_a_second() -> None:
                nonlocal trickle_read
                while True:
                    trickle_read += len(await trickle.content.read(1))
                    await asyncio.sleep(1)

            trickler = asyncio.ensure_future(one_byte_a_second())
            stack.callback(trickler.cancel)
            # Let every stream fill what it may, sampling the hub's RSS on the way: it must
            # plateau (the second half of the samples adds nothing over the first).
            samples: list[int] = []
            for _ in range(60):
                samples.append(hub.rss_kib() * 1024)
                await asyncio.sleep(0.1)
            peak = max(samples)
            first_half = max(samples[:30])
            # Meanwhile the tunnel still serves others at full speed.
            started = time.monotonic()
            async with client.get(
                world.backend_url(CLUSTER, "blob?size=20000000"), headers=headers
            ) as other:
                assert len(await other.read()) == 20_000_000
            other_seconds = time.monotonic() - started
            streams = await hub.open_streams_gauge()
            agent_streams = (await agents.stats())["sessions"][CLUSTER]["open_streams"]
        finally:
            await stack.aclose()
        growth = peak - rss_before
        bound = SLOW_CLIENTS * PER_STREAM_BOUND + FIXED_BOUND
        harness.report(
            "slow consumers",
            slow_clients=SLOW_CLIENTS + 1,
            unread_if_unbounded_mib=(SLOW_CLIENTS + 1) * BODY // 2**20,
            hub_rss_mib_before=round(rss_before / 2**20, 1),
            hub_rss_mib_peak=round(peak / 2**20, 1),
            hub_rss_mib_peak_first_3s=round(first_half / 2**20, 1),
            growth_mib=round(growth / 2**20, 1),
            growth_per_stalled_stream_kib=round(growth / (SLOW_CLIENTS + 1) / 1024),
            bound_mib=round(bound / 2**20, 1),
            trickle_bytes_read=trickle_read,
            other_20mb_download_s=round(other_seconds, 2),
            open_streams_while_stalled=streams,
        )
        assert streams == SLOW_CLIENTS + 1
        assert agent_streams == SLOW_CLIENTS + 1
        assert growth < bound, (growth, bound)
        assert peak - first_half < 4 * 2**20  # a plateau, not a slope
        assert other_seconds < 5

        async def released() -> bool:
            return await hub.open_streams_gauge() == 0 and (await hub.debug())["open_streams"] == 0

        await harness.eventually(released, within=10)
