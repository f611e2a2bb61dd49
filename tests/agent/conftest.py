"""Fixtures for agent tests: a prepared kubesim parent and child, and running agents."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from clusternet_aa.agent.agent import Agent
from clusternet_aa.agent.settings import AgentSettings
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim
from tests.agent import world


@dataclass
class Clusters:
    parent: KubesimServer
    child: KubesimServer
    parent_admin: KubeClient
    child_admin: KubeClient


@pytest.fixture
async def clusters() -> AsyncIterator[Clusters]:
    async with (
        running_kubesim() as parent,
        running_kubesim(world.child_config()) as child,
        world.admin(parent) as parent_admin,
        world.admin(child) as child_admin,
    ):
        await world.prepare_parent(parent_admin)
        await world.prepare_child(child_admin)
        yield Clusters(parent, child, parent_admin, child_admin)


@contextlib.asynccontextmanager
async def running_agent(
    child: KubesimServer, settings: AgentSettings, *, identity: str | None = None
) -> AsyncIterator[Agent]:
    """An in-process agent whose child client is kubesim's admin."""
    async with api_client(child) as api:
        agent = Agent(settings, child=KubeClient(api), identity=identity)
        task = asyncio.ensure_future(agent.run())
        try:
            yield agent
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, every: float = 0.05
) -> None:
    """Wait until ``check()`` is true, or fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await check():
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {check}")
        await asyncio.sleep(every)
