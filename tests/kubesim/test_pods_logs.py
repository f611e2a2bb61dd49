"""``GET pods/<name>/log`` from the container process output."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.kubesim.podtools import PodClient, pod, pod_client, pod_sim

LOG = "/api/v1/namespaces/default/pods/p/log"
FIVE_LINES = {
    "name": "c",
    "image": "x",
    "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; sleep 300"],
}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[PodClient]:
    async with pod_sim(tmp_path) as sim, pod_client(sim) as c:
        yield c


async def _with_lines(client: PodClient, count: int) -> None:
    await client.create(pod("p", FIVE_LINES))
    log = client.server.pods.sandboxes[("default", "p")].containers["c"].log
    async with asyncio.timeout(5):
        while len(log.records) < count:
            await log.changed()


async def test_log_tail_timestamps_and_limit(client: PodClient) -> None:
    await _with_lines(client, 6)
    status, body, content_type = await client.request("GET", LOG)
    assert status == 200
    assert content_type.startswith("text/plain")
    assert sorted(body.splitlines()) == sorted([f"line {i}" for i in range(1, 6)] + ["oops"])
    status, body, _ = await client.request("GET", LOG + "?tailLines=2&stream=Stdout")
    assert body == "line 4\nline 5\n"
    status, body, _ = await client.request("GET", LOG + "?tailLines=0")
    assert (status, body) == (200, "")
    status, body, _ = await client.request(
        "GET", LOG + "?timestamps=true&tailLines=1&stream=Stdout"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z line 5\n", body), body
    status, body, _ = await client.request("GET", LOG + "?limitBytes=9&stream=Stdout")
    assert body == "line 1\nli"
    status, body, _ = await client.request("GET", LOG + "?sinceSeconds=60")
    assert len(body.splitlines()) == 6


async def test_log_option_errors(client: PodClient) -> None:
    await _with_lines(client, 6)
    status, body, _ = await client.request("GET", LOG + "?tailLines=-1")
    assert (status, body["reason"], body["message"]) == (
        422,
        "Invalid",
        'PodLogOptions "p" is invalid: tailLines: Invalid value: -1: must be greater than or '
        "equal to 0",
    )
    status, body, _ = await client.request("GET", LOG + "?previous=true")
    assert (status, body["reason"], body["message"]) == (
        400,
        "BadRequest",
        'previous terminated container "c" in pod "p" not found',
    )
    status, body, _ = await client.request("GET", LOG + "?container=zz")
    assert (status, body["message"]) == (400, "container zz is not valid for pod p")
    status, body, _ = await client.request("GET", "/api/v1/namespaces/default/pods/nope/log")
    assert (status, body["message"]) == (404, 'pods "nope" not found')


async def test_log_follow_streams_until_the_process_ends(client: PodClient) -> None:
    ticker = {
        "name": "c",
        "image": "x",
        "command": ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"],
    }
    await client.create(pod("p", ticker, restartPolicy="Never"))
    url = client.server.url + LOG + "?follow=true"
    arrivals: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    async with client.session.get(url, headers=client.headers()) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        async for chunk in response.content.iter_any():
            arrivals.append((loop.time(), chunk))
    text = b"".join(c for _, c in arrivals).decode()
    assert text == "tick 1\ntick 2\ntick 3\n"
    assert arrivals[-1][0] - arrivals[0][0] > 0.4  # streamed as printed, not at the end


async def test_unscheduled_pod_has_an_empty_log(tmp_path: Path) -> None:
    async with running_kubesim(state_dir=tmp_path / "s") as sim, pod_client(sim) as c:
        await c.create(pod("p", FIVE_LINES))
        status, body, content_type = await c.request("GET", LOG)
        assert (status, body) == (200, "")
        assert content_type.startswith("text/plain")
