"""The agent's tunnel client reconnects after the link drops, with jittered backoff."""

from __future__ import annotations

import asyncio
import random

from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from tests.proxy.conftest import CLUSTER_ID, ProxyWorld


def test_tunnel_url_keeps_the_parent_path_prefix() -> None:
    assert (
        tunnel_url("https://parent.example:6443/prefix/", "abc")
        == "wss://parent.example:6443/prefix/apis/proxies.clusternet.io/v1alpha1/sockets/abc"
    )
    assert tunnel_url("http://127.0.0.1:80", "x").startswith("ws://127.0.0.1:80/apis/")


def test_backoff_is_jittered_and_capped() -> None:
    backoff = Backoff(initial=1, maximum=30)
    rng = random.Random(7)
    delays = [backoff.delay(attempt, rng) for attempt in range(12) for _ in range(50)]
    assert max(delays) <= 30
    assert min(delays) >= 0
    # Full jitter: the same attempt gives widely spread delays (no synchronized herd).
    late = [backoff.delay(10, rng) for _ in range(200)]
    assert max(late) - min(late) > 20


async def test_client_reconnects_after_the_hub_drops_it(world: ProxyWorld) -> None:
    url = tunnel_url(world.hub_url, CLUSTER_ID)
    async with Executor(
        ChildApiserver(
            url=world.child.url, ssl_context=world.child_ssl, token=lambda: "child-agent-token"
        )
    ) as executor:
        client = TunnelClient(
            url,
            executor,
            token=lambda: "agent-token",
            ssl_context=world.client_ssl,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )
        runner = asyncio.create_task(client.run())
        await asyncio.wait_for(client.connected.wait(), 5)
        for _ in range(300):
            if world.registry.get(CLUSTER_ID) is not None:
                break
            await asyncio.sleep(0.01)
        hub_side = world.registry.get(CLUSTER_ID)
        assert hub_side is not None
        await hub_side.close(ErrorCode.INTERNAL_ERROR, "simulated hub failure")
        for _ in range(300):
            if client.connects >= 2 and world.registry.get(CLUSTER_ID) not in (None, hub_side):
                break
            await asyncio.sleep(0.01)
        assert client.connects >= 2
        result = await world.kubectl("alice-token", "get", "pods")
        assert result.returncode == 0, result.stderr
        client.stop()
        await asyncio.wait_for(runner, 15)
