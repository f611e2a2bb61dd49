"""The agent's tunnel client redials at once when the hub drains its session (GOAWAY)."""

from __future__ import annotations

import asyncio

from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from tests.proxy.conftest import CLUSTER_ID, ProxyWorld
from tests.proxy.conftest import world as world  # the proxy tests' fixture


async def _attached(world: ProxyWorld, old: object) -> object:
    for _ in range(500):
        current = world.registry.get(CLUSTER_ID)
        if current is not None and current is not old:
            return current
        await asyncio.sleep(0.01)
    raise AssertionError("no new tunnel")


async def test_goaway_redials_at_once_and_a_401_is_reported(world: ProxyWorld) -> None:
    unauthorized: list[bool] = []
    async with Executor(
        ChildApiserver(
            url=world.child.url, ssl_context=world.child_ssl, token=lambda: "child-agent-token"
        )
    ) as executor:
        client = TunnelClient(
            tunnel_url(world.hub_url, CLUSTER_ID),
            executor,
            token=lambda: "agent-token",
            ssl_context=world.client_ssl,
            # a backoff this long would fail the test: only an immediate redial passes
            backoff=Backoff(initial=30, maximum=30),
            on_unauthorized=lambda: unauthorized.append(True),
        )
        runner = asyncio.create_task(client.run())
        try:
            await asyncio.wait_for(client.connected.wait(), 5)
            first = await _attached(world, None)
            await asyncio.sleep(1.1)  # a session that lived a while
            loop = asyncio.get_running_loop()
            drained_at = loop.time()
            hub_side = world.registry.get(CLUSTER_ID)
            assert hub_side is not None
            await hub_side.close(ErrorCode.NO_ERROR, "hub restarting")
            await _attached(world, first)
            assert loop.time() - drained_at < 2
            assert client.connects == 2
            assert not unauthorized
        finally:
            client.stop()
            await asyncio.wait_for(runner, 10)
    # a refused upgrade with 401 is reported (the agent then registers again)
    async with Executor(ChildApiserver(url=world.child.url, ssl_context=world.child_ssl)) as ex:
        bad = TunnelClient(
            tunnel_url(world.hub_url, CLUSTER_ID),
            ex,
            token=lambda: "no-such-token",
            ssl_context=world.client_ssl,
            backoff=Backoff(initial=0.05, maximum=0.05),
            on_unauthorized=lambda: unauthorized.append(True),
        )
        runner = asyncio.create_task(bad.run())
        for _ in range(200):
            if unauthorized:
                break
            await asyncio.sleep(0.01)
        bad.stop()
        await asyncio.wait_for(runner, 10)
    assert unauthorized
