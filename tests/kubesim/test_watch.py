"""Watch streams: parameter spellings, resume, 410, selectors, bookmarks, timeouts."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.kubesim.conftest import Raw, configmap

CM = "/api/v1/namespaces/default/configmaps"


async def read_events(raw: Raw, query: str, count: int, **headers: str) -> tuple[Any, list[Any]]:
    """Open a watch and read ``count`` events (the stream stays open past them)."""
    events: list[Any] = []
    async with raw.session.get(
        f"{raw.server.url}{CM}?{query}",
        headers={"Authorization": f"Bearer {raw.server.admin_token}", **headers},
    ) as response:
        assert response.status == 200
        while len(events) < count:
            line = await response.content.readline()
            assert line, f"stream ended after {events}"
            events.append(json.loads(line))
        return response.headers, events


async def test_watch_spellings_and_content_type(raw: Raw) -> None:
    await raw.post(CM, configmap("w1"))
    for spelling in ("true", "True", "1"):
        headers, events = await read_events(
            raw, f"watch={spelling}&fieldSelector=metadata.name%3Dw1", 1
        )
        assert headers["Content-Type"] == "application/json"
        assert events[0]["type"] == "ADDED"
        assert events[0]["object"]["metadata"]["name"] == "w1"
        assert events[0]["object"]["kind"] == "ConfigMap"
    bad = await raw.get(f"{CM}?watch=yes")
    assert bad.status == 400


async def test_resume_from_resource_version(raw: Raw) -> None:
    first = (await raw.post(CM, configmap("r1"))).body
    rv = first["metadata"]["resourceVersion"]
    changed = dict(first, data={"k": "changed"})
    await raw.put(f"{CM}/r1", changed)
    await raw.post(CM, configmap("r2"))
    await raw.delete(f"{CM}/r1")
    _, events = await read_events(raw, f"watch=1&resourceVersion={rv}", 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "r1"),
        ("ADDED", "r2"),
        ("DELETED", "r1"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > int(rv)


async def test_too_old_resource_version_is_410_event() -> None:
    async with running_kubesim(KubesimConfig(history=5, nodes=0)) as sim:
        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            raw = Raw(session, sim)
            for index in range(10):
                await raw.post(CM, configmap(f"old{index}"))
            _, events = await read_events(raw, "watch=true&resourceVersion=1", 1)
            assert events[0]["type"] == "ERROR"
            status = events[0]["object"]
            assert status["kind"] == "Status"
            assert status["code"] == 410
            assert status["reason"] == "Expired"
            listed = await raw.get(f"{CM}?limit=1")
            token = listed.body["metadata"]["continue"]
            for index in range(10):
                await raw.post(CM, configmap(f"new{index}"))
            expired = await raw.get(f"{CM}?limit=1&continue={token}")
            assert expired.status == 410


async def test_selector_transitions_become_added_and_deleted(raw: Raw) -> None:
    obj = (await raw.post(CM, configmap("sel"))).body
    rv = obj["metadata"]["resourceVersion"]
    obj["metadata"]["labels"] = {"watched": "yes"}
    obj = (await raw.put(f"{CM}/sel", obj)).body
    obj["data"] = {"k": "2"}
    obj = (await raw.put(f"{CM}/sel", obj)).body
    obj["metadata"]["labels"] = {}
    await raw.put(f"{CM}/sel", obj)
    _, events = await read_events(raw, f"watch=1&resourceVersion={rv}&labelSelector=watched", 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_timeout_ends_stream_and_bookmarks(raw: Raw) -> None:
    await raw.post(CM, configmap("b1"))
    async with raw.session.get(
        f"{raw.server.url}{CM}?watch=1&timeoutSeconds=1&allowWatchBookmarks=true"
        "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
        headers={"Authorization": f"Bearer {raw.server.admin_token}"},
    ) as response:
        body = await response.read()  # returns only because the server ends the stream
    events = [json.loads(line) for line in body.splitlines()]
    assert events[0]["type"] == "ADDED"
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert bookmark["object"]["kind"] == "ConfigMap"


async def test_table_watch_for_kubectl(raw: Raw) -> None:
    await raw.post(CM, configmap("t1"))
    headers, events = await read_events(
        raw,
        "watch=1&fieldSelector=metadata.name%3Dt1",
        1,
        Accept="application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    assert headers["Content-Type"].startswith("application/json;as=Table")
    table = events[0]["object"]
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["t1", 1]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_slow_watcher_is_closed_not_buffered() -> None:
    from clusternet_aa.sandbox.kubesim.store import Store

    store = Store(watch_queue=3)
    watcher = store.watch(("", "configmaps"), None, since=None)
    for index in range(5):
        store.insert(("", "configmaps"), configmap(f"s{index}"))
    assert watcher.overflowed
    assert len(await watcher.next_batch()) == 3
    assert await watcher.next_batch() == []
