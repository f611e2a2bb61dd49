"""Real kubectl through the hub's proxy, a real websocket tunnel and the agent executor, to a
kubesim child whose own RBAC decides (impersonated RBAC)."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.proxy.conftest import CLUSTER_ID, ProxyWorld


async def test_get_list_through_the_tunnel_as_the_parent_user(world: ProxyWorld) -> None:
    await world.connect_agent()
    result = await world.kubectl("alice-token", "get", "pods")
    assert result.returncode == 0, result.stderr
    assert "No resources found in default namespace" in result.stderr


async def test_the_childs_rbac_denies_what_it_does_not_allow(world: ProxyWorld) -> None:
    await world.connect_agent()
    result = await world.kubectl("alice-token", "get", "secrets")
    assert result.returncode == 1
    assert 'secrets is forbidden: User "alice" cannot list resource "secrets"' in result.stderr


async def test_parent_system_masters_is_not_a_child_admin(world: ProxyWorld) -> None:
    await world.connect_agent()
    result = await world.kubectl("root-token", "get", "namespaces")
    assert result.returncode == 1
    assert 'User "root" cannot list resource "namespaces"' in result.stderr


async def test_callers_own_impersonation_never_reaches_the_child(world: ProxyWorld) -> None:
    await world.connect_agent()
    # alice asks to act as admin-user (a child cluster-admin); the hub drops the header, so the
    # child sees alice, who may not list namespaces.
    result = await world.kubectl("alice-token", "--as", "admin-user", "get", "namespaces")
    assert result.returncode == 1
    assert 'User "alice" cannot list resource "namespaces"' in result.stderr


async def test_apply_patch_delete_watch_as_a_child_admin(world: ProxyWorld) -> None:
    await world.connect_agent()
    manifest = b"""
apiVersion: v1
kind: ConfigMap
metadata: {name: demo, namespace: default}
data: {greeting: hello}
"""
    applied = await world.kubectl("admin-token", "apply", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, applied.stderr
    assert "configmap/demo created" in applied.stdout

    watcher = asyncio.create_task(
        world.kubectl(
            "admin-token",
            "get",
            "configmap",
            "demo",
            "-w",
            "-o",
            "json",
            "--request-timeout=0",
            timeout=30,
        )
    )
    await asyncio.sleep(1.0)
    patched = await world.kubectl(
        "admin-token",
        "patch",
        "configmap",
        "demo",
        "--type=merge",
        "-p",
        '{"data":{"greeting":"bonjour"}}',
    )
    assert patched.returncode == 0, patched.stderr
    await asyncio.sleep(0.5)
    deleted = await world.kubectl("admin-token", "delete", "configmap", "demo")
    assert deleted.returncode == 0, deleted.stderr
    await asyncio.sleep(0.5)
    # Ending the watch: kill kubectl by closing its tunnel-side streams is not needed; it
    # stops at the timeout below, and what it printed must show the change as it happened.
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher


async def test_watch_events_arrive_through_the_tunnel_as_they_happen(world: ProxyWorld) -> None:
    await world.connect_agent()
    url = world.proxy_url() + "/api/v1/namespaces/default/configmaps?watch=true"
    headers = {"Authorization": "Bearer admin-token"}
    async with (
        aiohttp.ClientSession() as client,
        client.get(url, headers=headers, ssl=world.client_ssl) as response,
    ):
        assert response.status == 200
        for name in ("one", "two"):
            created = await world.kubectl(
                "admin-token", "create", "configmap", name, "--from-literal=a=b"
            )
            assert created.returncode == 0, created.stderr
            while True:  # existing objects come first as ADDED; ours follows as it happens
                line = await asyncio.wait_for(response.content.readline(), 5)
                event = json.loads(line)
                if event["object"]["metadata"]["name"] == name:
                    assert event["type"] == "ADDED"
                    break


async def test_requests_reuse_pooled_connections_to_the_child(world: ProxyWorld) -> None:
    await world.connect_agent()
    url = world.proxy_url() + "/api/v1/namespaces/default/pods"
    async with aiohttp.ClientSession() as client:
        for _ in range(30):
            async with client.get(
                url, headers={"Authorization": "Bearer alice-token"}, ssl=world.client_ssl
            ) as r:
                assert r.status == 200
                await r.read()
    assert world.executors[0].connections_opened <= 2


async def test_unconnected_cluster_is_a_503_fast_and_unknown_is_404(world: ProxyWorld) -> None:
    async with aiohttp.ClientSession() as client:
        started = time.monotonic()
        async with client.get(
            world.proxy_url() + "/api",
            headers={"Authorization": "Bearer alice-token"},
            ssl=world.client_ssl,
        ) as r:
            assert r.status == 503
            body = await r.json()
        assert time.monotonic() - started < 1.0
        assert body["kind"] == "Status"
        assert body["reason"] == "ServiceUnavailable"
        assert CLUSTER_ID in body["message"]
        unknown = world.proxy_url("deadbeef-0000-4000-8000-000000000009") + "/api"
        async with client.get(
            unknown, headers={"Authorization": "Bearer alice-token"}, ssl=world.client_ssl
        ) as r:
            assert r.status == 404
            assert (await r.json())["reason"] == "NotFound"


async def test_an_agent_cannot_hold_another_clusters_tunnel(world: ProxyWorld) -> None:
    from clusternet_aa.tunnel.websocket import HandshakeError

    with pytest.raises(HandshakeError) as info:
        await world.connect_agent(
            token="agent-token", cluster_id="deadbeef-0000-4000-8000-000000000009"
        )
    assert info.value.status == 403
    with pytest.raises(HandshakeError) as info:
        await world.connect_agent(token="other-agent-token", cluster_id=CLUSTER_ID)
    assert info.value.status == 403
    assert world.registry.get(CLUSTER_ID) is None


async def test_unauthorized_proxy_callers_get_the_hubs_403(world: ProxyWorld) -> None:
    await world.connect_agent()
    result = await world.kubectl("nobody-token", "get", "pods")
    assert result.returncode == 1
    assert "Error from server (Forbidden)" in result.stderr
    raw = await world.kubectl("nobody-token", "get", "--raw", "/api/v1/pods")
    assert raw.returncode == 1
    assert 'User "nobody" cannot get resource "sockets/proxy"' in raw.stderr


async def test_dial_targets_outside_the_agents_policy_are_refused(world: ProxyWorld) -> None:
    await world.connect_agent()
    url = world.proxy_url().replace("/proxy/direct", "/proxy/https/10.1.2.3:443") + "/api"
    async with (
        aiohttp.ClientSession() as client,
        client.get(url, headers={"Authorization": "Bearer alice-token"}, ssl=world.client_ssl) as r,
    ):
        assert r.status == 403
        body = await r.json()
        assert "refuses this target" in body["message"]


@pytest.mark.parametrize(
    "suffix",
    ["/../../sockets/other/proxy/direct/api", "/%2e%2e/x", "/api%2Fv1", "/./api"],
)
async def test_path_traversal_out_of_proxy_direct_is_rejected(
    world: ProxyWorld, suffix: str
) -> None:
    await world.connect_agent()
    raw = world.proxy_url() + suffix
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            aiohttp.client.URL(raw, encoded=True),
            headers={"Authorization": "Bearer alice-token"},
            ssl=world.client_ssl,
        ) as r,
    ):
        assert r.status in (400, 404)
        assert (await r.json())["kind"] == "Status"


async def test_a_newer_tunnel_replaces_the_old_one(world: ProxyWorld) -> None:
    first = await world.connect_agent()
    second = await world.connect_agent()
    await asyncio.wait_for(first.wait_closed(), 5)
    assert world.registry.get(CLUSTER_ID) is not None
    assert not second.is_closed
    result = await world.kubectl("alice-token", "get", "pods")
    assert result.returncode == 0, result.stderr


async def test_tunnel_drop_mid_request_gives_a_clean_error(world: ProxyWorld) -> None:
    agent = await world.connect_agent()
    url = world.proxy_url() + "/api/v1/namespaces/default/configmaps?watch=true"
    async with (
        aiohttp.ClientSession() as client,
        client.get(
            url, headers={"Authorization": "Bearer admin-token"}, ssl=world.client_ssl
        ) as response,
    ):
        assert response.status == 200
        await agent.close(grace=0.2)
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(response.content.read(), 5)
