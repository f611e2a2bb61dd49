"""kubernetes_asyncio against kubesim: CRUD, conflicts, selectors, status, watch resume and 410."""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import api_client, running_kubesim


def cm(name: str, labels: dict[str, str] | None = None) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data={"k": "v"}
    )


async def test_crud_conflicts_and_selectors(sim: KubesimServer) -> None:
    async with api_client(sim) as api:
        core = client.CoreV1Api(api)
        created = await core.create_namespaced_config_map("default", cm("a", {"team": "x"}))
        assert created.metadata.uid
        await core.create_namespaced_config_map("default", cm("b", {"team": "y"}))
        with pytest.raises(ApiException) as exists:
            await core.create_namespaced_config_map("default", cm("a"))
        assert exists.value.status == 409
        listed = await core.list_namespaced_config_map("default", label_selector="team in (x)")
        assert [i.metadata.name for i in listed.items] == ["a"]
        by_field = await core.list_namespaced_config_map(
            "default", field_selector="metadata.name=b"
        )
        assert [i.metadata.name for i in by_field.items] == ["b"]
        created.data = {"k": "2"}
        replaced = await core.replace_namespaced_config_map("a", "default", created)
        assert replaced.data == {"k": "2"}
        created.data = {"k": "3"}
        with pytest.raises(ApiException) as conflict:
            await core.replace_namespaced_config_map("a", "default", created)
        assert conflict.value.status == 409
        patched = await core.patch_namespaced_config_map("a", "default", {"data": {"p": "1"}})
        assert patched.data == {"k": "2", "p": "1"}
        await core.delete_namespaced_config_map("a", "default")
        with pytest.raises(ApiException) as missing:
            await core.read_namespaced_config_map("a", "default")
        assert missing.value.status == 404


async def test_status_updates(sim: KubesimServer) -> None:
    async with api_client(sim) as api:
        apps = client.AppsV1Api(api)
        body = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="d"),
            spec=client.V1DeploymentSpec(
                selector=client.V1LabelSelector(match_labels={"a": "b"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"a": "b"}),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="i")]),
                ),
            ),
        )
        made = await apps.create_namespaced_deployment("default", body)
        assert made.spec.replicas == 1
        made.status = client.V1DeploymentStatus(replicas=1, ready_replicas=1)
        updated = await apps.replace_namespaced_deployment_status("d", "default", made)
        assert updated.status.ready_replicas == 1
        assert updated.metadata.generation == 1
        patched = await apps.patch_namespaced_deployment_status(
            "d", "default", {"status": {"readyReplicas": 0}}
        )
        assert patched.status.ready_replicas in (0, None)
        scale = await apps.read_namespaced_deployment_scale("d", "default")
        assert scale.spec.replicas == 1


async def test_watch_resume() -> None:
    async with running_kubesim(KubesimConfig(nodes=0)) as sim, api_client(sim) as api:
        core = client.CoreV1Api(api)
        first = await core.create_namespaced_config_map("default", cm("w1"))
        rv = first.metadata.resource_version
        await core.create_namespaced_config_map("default", cm("w2"))
        await core.delete_namespaced_config_map("w1", "default")
        seen = []
        stream = watch.Watch()
        async for event in stream.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=rv,
            timeout_seconds=5,
        ):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 2:
                stream.stop()
        assert seen == [("ADDED", "w2"), ("DELETED", "w1")]


async def test_watch_gone_is_410() -> None:
    async with running_kubesim(KubesimConfig(nodes=0, history=3)) as sim, api_client(sim) as api:
        core = client.CoreV1Api(api)
        for index in range(6):
            await core.create_namespaced_config_map("default", cm(f"g{index}"))
        stream = watch.Watch()
        with pytest.raises(ApiException) as gone:
            async for _ in stream.stream(
                core.list_namespaced_config_map, "default", resource_version="1"
            ):
                pass
        assert gone.value.status == 410


async def test_client_certificate_and_forbidden(sim: KubesimServer) -> None:
    cert = sim.pki.issue_client_cert("carol")
    async with api_client(sim, client_cert=cert) as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as denied:
            await core.list_namespaced_pod("default")
        assert denied.value.status == 403
