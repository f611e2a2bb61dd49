"""Freeze the hub or an agent with SIGSTOP for longer than the keepalive (0.3 s x 3 here).

The other side must declare the link dead within 3 missed pings (measured: between 3 and 4
intervals after the freeze, plus scheduling slack), free the streams it carried (the hub's
``clusternet_socket_streams`` gauge and tunnel gauge drop; the agent's session holds none),
and everything must recover after SIGCONT without help: the agent reconnects and requests work.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.reliability import harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INTERVAL, MISSES = 0.3, 3
#: Dead after ``MISSES`` missed intervals: at most one more interval for the phase, plus slack.
DEADLINE = INTERVAL * (MISSES + 1) + 0.5
#: Well past the keepalive: a freeze this long must be noticed.
FREEZE = INTERVAL * MISSES * 3


async def _slow_download(world: harness.World, cluster: str) -> tuple[asyncio.Task[str], float]:
    """A download that stays open (1 GiB at ~32 MB/s); returns its task once bytes flow."""
    flowing = asyncio.Event()

    async def run() -> str:
        url = world.backend_url(cluster, "blob?size=1073741824&chunk=65536&delay=0.002")
        try:
            async with world.http.get(url, headers=world.auth(harness.ADMIN_TOKEN)) as response:
                while await response.content.read(65536):
                    flowing.set()
        except aiohttp.ClientPayloadError as exc:
            return f"payload error: {exc}"
        except aiohttp.ClientError as exc:
            return f"client error: {exc}"
        return "completed"

    task = asyncio.ensure_future(run())
    await asyncio.wait_for(flowing.wait(), 10)
    return task, time.monotonic()


async def test_frozen_agent_is_declared_dead_by_the_hub_and_recovers(tmp_path: Path) -> None:
    async with harness.running_world(tmp_path, backend=True, keepalive=(INTERVAL, MISSES)) as world:
        hub = world.hub
        assert hub is not None
        agents = await world.start_agents(["frozen-agent"])
        await world.wait_connected("frozen-agent")
        download, _ = await _slow_download(world, "frozen-agent")
        assert await hub.open_streams_gauge() == 1
        assert (await hub.debug())["open_streams"] == 1
        loop = asyncio.get_running_loop()
        agents.proc.signal(signal.SIGSTOP)
        frozen = loop.time()
        try:

            async def tunnel_gone() -> bool:
                return await hub.tunnels() == 0

            dead_after = await harness.eventually(tunnel_gone, within=10, every=0.02)
            outcome = await asyncio.wait_for(download, 5)
            streams = await hub.open_streams_gauge()
            debug = await hub.debug()
            await asyncio.sleep(max(0.0, FREEZE - (loop.time() - frozen)))
        finally:
            agents.proc.signal(signal.SIGCONT)
        harness.report(
            "freeze agent", hub_declared_dead_after_s=round(dead_after, 3), client=outcome
        )
        assert dead_after <= DEADLINE, f"{dead_after:.2f}s > {DEADLINE:.2f}s"
        assert dead_after >= INTERVAL * (MISSES - 1)  # it did wait for the misses
        assert outcome.startswith("payload error")  # the client saw an error, not a hang
        assert streams == 0
        assert debug["open_streams"] == 0
        assert debug["tunnels"] == 0
        assert "KEEPALIVE_TIMEOUT" in hub.proc.log.read_text()  # type: ignore[union-attr]
        thawed = loop.time()
        await world.wait_connected("frozen-agent")
        harness.report("freeze agent", serves_after_sigcont_s=round(loop.time() - thawed, 3))
        assert await hub.tunnels() == 1


async def test_frozen_hub_is_declared_dead_by_agents_and_they_recover(tmp_path: Path) -> None:
    ids = [f"frozen-hub-{i}" for i in range(5)]
    async with harness.running_world(tmp_path, backend=True, keepalive=(INTERVAL, MISSES)) as world:
        hub = world.hub
        assert hub is not None
        agents = await world.start_agents(ids)
        for cid in ids:
            await world.wait_connected(cid)
        idle_tasks = (await agents.stats())["tasks"]
        download, _ = await _slow_download(world, ids[0])
        stats = await agents.stats()
        assert stats["sessions"][ids[0]]["open_streams"] == 1
        hub.proc.signal(signal.SIGSTOP)  # type: ignore[union-attr]
        frozen = time.time()
        try:

            async def all_down() -> bool:
                downs = {e["id"] for e in agents.events() if e["ev"] == "down" and e["t"] > frozen}
                return downs == set(ids)

            await harness.eventually(all_down, within=10, every=0.05)
            downs = [e for e in agents.events() if e["ev"] == "down" and e["t"] > frozen]
            await asyncio.sleep(max(0.0, FREEZE - (time.time() - frozen)))
        finally:
            hub.proc.signal(signal.SIGCONT)  # type: ignore[union-attr]
        delays = sorted(e["t"] - frozen for e in downs)
        harness.report("freeze hub", agents_declared_dead_after_s=[round(d, 3) for d in delays])
        assert all(e["code"] == "KEEPALIVE_TIMEOUT" for e in downs), downs
        assert max(delays) <= DEADLINE, delays
        assert min(delays) >= INTERVAL * (MISSES - 1)
        assert all(e["streams"] == 0 for e in downs)  # the agent freed the stream it served
        thawed = time.monotonic()
        for cid in ids:
            await world.wait_connected(cid, within=30)
        harness.report("freeze hub", all_serve_after_sigcont_s=round(time.monotonic() - thawed, 3))
        outcome = await asyncio.wait_for(download, 10)
        assert outcome != "completed"

        async def settled() -> bool:
            now = await agents.stats()
            return bool(
                now["tasks"] <= idle_tasks
                and all(s["open_streams"] == 0 for s in now["sessions"].values())
                and await hub.open_streams_gauge() == 0
                and await hub.tunnels() == len(ids)
            )

        await harness.eventually(settled, within=10, every=0.1)
