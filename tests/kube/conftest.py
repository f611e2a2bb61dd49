"""Fixtures for kube/ tests: a kubesim instance and clients of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim


@pytest.fixture
async def sim() -> AsyncIterator[KubesimServer]:
    async with running_kubesim() as server:
        yield server


@pytest.fixture
async def kube(sim: KubesimServer) -> AsyncIterator[KubeClient]:
    async with api_client(sim) as api:
        yield KubeClient(api)
