"""Drain-then-stop: readiness turns false first, the listener closes after the delay."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from clusternet_aa.hub.server import HubServer
from tests.hub.conftest import PKI, Caller, flag_settings


async def test_sigterm_drain_order(pki: PKI, parent_kubeconfig: Path) -> None:
    settings = replace(flag_settings(pki, parent_kubeconfig), shutdown_delay_seconds=0.5)
    server = HubServer(settings)
    await server.start()
    call = Caller(server)
    context = call.context()
    assert (await call("/readyz")).status == 200
    stopping = asyncio.create_task(server.stop())
    await asyncio.sleep(0.1)
    during = await call("/readyz?verbose")
    assert during.status == 500
    assert "[-]shutdown failed" in during.text
    assert (await call("/livez")).status == 200  # alive, just draining
    await stopping
    with pytest.raises(aiohttp.ClientConnectionError):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
            session.get(server.url + "/healthz") as response,
        ):
            await response.read()
