"""kubernetes_asyncio against kubesim: paging, bookmarks, the 410 relist loop, CR status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim
from clusternet_aa.sandbox.kubesim.watching import WatchSettings
from tests.kubesim.test_crds import widget_crd


def cm(name: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"paged": "yes"}), data={"k": "v"}
    )


async def test_limit_and_continue(sim: KubesimServer) -> None:
    async with api_client(sim) as api:
        core = client.CoreV1Api(api)
        for index in range(7):
            await core.create_namespaced_config_map("default", cm(f"p{index}"))
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            kwargs: dict[str, Any] = {"label_selector": "paged=yes", "limit": 3}
            if token:
                kwargs["_continue"] = token
            page = await core.list_namespaced_config_map("default", **kwargs)
            pages += 1
            assert len(page.items) <= 3
            seen += [i.metadata.name for i in page.items]
            token = page.metadata._continue
            if not token:
                assert not page.metadata.remaining_item_count
                break
            assert page.metadata.remaining_item_count == 7 - len(seen)
        assert pages == 3
        assert seen == [f"p{i}" for i in range(7)]
        with pytest.raises(ApiException) as bad:
            await core.list_namespaced_config_map("default", limit=1, _continue="not-a-token")
        assert bad.value.status == 400


async def test_watch_bookmarks_advance_the_resource_version() -> None:
    config = KubesimConfig(nodes=0, watch=WatchSettings(bookmark_interval=0.1))
    async with running_kubesim(config) as sim, api_client(sim) as api:
        core = client.CoreV1Api(api)
        listed = await core.list_namespaced_config_map("default")
        start = int(listed.metadata.resource_version)
        # A write elsewhere moves the global resourceVersion past anything this watch sees.
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="x")))
        stream = watch.Watch()
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            async for event in stream.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=listed.metadata.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=5,
            ):
                events.append(event)
                if event["type"] == "BOOKMARK":
                    stream.stop()
        bookmark = events[-1]
        assert bookmark["type"] == "BOOKMARK"
        assert bookmark["raw_object"]["kind"] == "ConfigMap"
        assert int(str(stream.resource_version)) > start
        assert [e["type"] for e in events[:-1]] == []


async def test_410_then_relist_and_watch_again() -> None:
    """The informer loop: a too-old watch raises 410, a fresh list gives a usable version."""
    async with running_kubesim(KubesimConfig(nodes=0, history=3)) as sim, api_client(sim) as api:
        core = client.CoreV1Api(api)
        first = await core.create_namespaced_config_map("default", cm("old"))
        for index in range(5):
            await core.create_namespaced_config_map("default", cm(f"n{index}"))
        stream = watch.Watch()
        with pytest.raises(ApiException) as gone:
            async for _ in stream.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=first.metadata.resource_version,
                timeout_seconds=5,
            ):
                pass
        assert gone.value.status == 410
        assert "Expired" in str(gone.value.reason)
        relisted = await core.list_namespaced_config_map("default")
        again = watch.Watch()
        await core.delete_namespaced_config_map("old", "default")
        async with asyncio.timeout(10):
            async for event in again.stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=relisted.metadata.resource_version,
                timeout_seconds=5,
            ):
                assert (event["type"], event["object"].metadata.name) == ("DELETED", "old")
                again.stop()


async def test_custom_object_status(sim: KubesimServer) -> None:
    async with api_client(sim) as api:
        extensions = client.ApiextensionsV1Api(api)
        # The generated client serializes a plain dict as it is.
        await extensions.create_custom_resource_definition(widget_crd())  # type: ignore[arg-type]
        await sim.settle()
        custom = client.CustomObjectsApi(api)
        args = ("example.com", "v1", "default", "widgets")
        body = {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 1},
            "status": {"phase": "ignored"},
        }
        made = await custom.create_namespaced_custom_object(*args, body)
        assert "status" not in made
        status = {"status": {"phase": "Ready"}, "spec": {"size": 5}}
        # For a dict body the generated client picks json-patch unless told otherwise; kube then
        # answers 400, and so does kubesim.
        with pytest.raises(ApiException) as wrong_type:
            await custom.patch_namespaced_custom_object_status(*args, "w", status)
        assert wrong_type.value.status == 400
        merge: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
        patched = await custom.patch_namespaced_custom_object_status(*args, "w", status, **merge)
        assert patched["status"] == {"phase": "Ready"}
        assert patched["spec"] == {"size": 1}
        patched["spec"]["size"] = 2
        patched["status"] = {"phase": "Lost"}
        replaced = await custom.replace_namespaced_custom_object(*args, "w", patched)
        assert replaced["spec"] == {"size": 2}
        assert replaced["status"] == {"phase": "Ready"}
        assert replaced["metadata"]["generation"] == 2
        stale = dict(replaced, spec={"size": 3})
        stale["metadata"] = dict(replaced["metadata"], resourceVersion="1")
        with pytest.raises(ApiException) as conflict:
            await custom.replace_namespaced_custom_object(*args, "w", stale)
        assert conflict.value.status == 409
