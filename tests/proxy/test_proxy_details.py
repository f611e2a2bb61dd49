"""Proxy details: Clusternet's credential extras, verbatim requests, failures, reconnect wait."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from clusternet_aa.identity import UserInfo
from clusternet_aa.proxy import forwarder
from clusternet_aa.proxy.dialer import allow_addresses
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from tests.proxy.conftest import CLUSTER_ID, PARENT_USERS, ProxyWorld


@pytest.fixture
async def echo_backend() -> AsyncIterator[str]:
    """An HTTP server that answers with what it received, byte for byte."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body": base64.b64encode(body).decode(),
            }
        )

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_clusternet_token_extra_is_used_instead_of_impersonation(
    world: ProxyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = UserInfo(name="clusternet", extra={"clusternet-token": (world.child.admin_token,)})
    monkeypatch.setitem(PARENT_USERS, "compat-token", user)
    world.authorizer.rules.add(("clusternet", "*", "sockets/proxy", "*"))
    await world.connect_agent()
    result = await world.kubectl("compat-token", "get", "namespaces")
    assert result.returncode == 0, result.stderr
    assert "kube-system" in result.stdout
    who = await world.kubectl("compat-token", "auth", "whoami", "-o", "json")
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "admin"


async def test_clusternet_certificate_extras_authenticate_with_the_child_cert(
    world: ProxyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = world.child.pki.issue_client_cert("cert-admin", ["system:masters"])
    monkeypatch.setitem(
        PARENT_USERS,
        "compat-cert-token",
        UserInfo(
            name="clusternet",
            extra={
                "clusternet-certificate": (base64.b64encode(pair.cert_pem).decode(),),
                "clusternet-privatekey": (base64.b64encode(pair.key_pem).decode(),),
            },
        ),
    )
    world.authorizer.rules.add(("clusternet", "*", "sockets/proxy", "*"))
    await world.connect_agent()
    who = await world.kubectl("compat-cert-token", "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "cert-admin"


async def test_url_targets_get_the_request_verbatim_and_no_credentials(
    world: ProxyWorld, echo_backend: str
) -> None:
    await world.connect_agent(dial_policy=allow_addresses([echo_backend]))
    base = world.proxy_url().replace("/proxy/direct", f"/proxy/http/{echo_backend}")
    raw = "/some/path?labelSelector=a%3Db%2Cc&fieldSelector=metadata.name%3Dx&x=%20&x=2"
    body = bytes(range(256)) * 64
    async with (
        aiohttp.ClientSession() as client,
        client.patch(
            aiohttp.client.URL(base + raw, encoded=True),
            data=body,
            headers={
                "Authorization": "Bearer alice-token",
                "Content-Type": "application/strategic-merge-patch+json",
                "Impersonate-User": "admin-user",
                "X-Remote-User": "admin-user",
                "Accept": "application/vnd.kubernetes.protobuf",
            },
            ssl=world.client_ssl,
        ) as response,
    ):
        assert response.status == 200
        seen = await response.json()
    assert seen["method"] == "PATCH"
    assert seen["raw_path"] == raw
    assert base64.b64decode(seen["body"]) == body
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["content-type"] == "application/strategic-merge-patch+json"
    assert headers["accept"] == "application/vnd.kubernetes.protobuf"
    # Neither the caller's credentials nor the agent's own ServiceAccount token leave for a
    # target that is not the child's API server.
    assert "authorization" not in headers
    assert not [k for k in headers if k.startswith(("impersonate-", "x-remote-"))]


async def test_unreachable_child_is_a_502(world: ProxyWorld) -> None:
    executor = Executor(ChildApiserver(url="https://127.0.0.1:1", token=lambda: "x"))
    await executor.__aenter__()
    world.executors.append(executor)
    from clusternet_aa.tunnel import websocket

    client = aiohttp.ClientSession()
    try:
        session = await websocket.connect(
            client,
            world.hub_url.replace("https", "wss", 1) + f"{forwarder.SOCKETS_PREFIX}{CLUSTER_ID}",
            ssl_context=world.client_ssl,
            headers={"Authorization": "Bearer agent-token"},
            handler=executor,
        )
        world.agent_sessions.append(session)
        for _ in range(200):
            if world.registry.get(CLUSTER_ID) is not None:
                break
            await asyncio.sleep(0.01)
        async with client.get(
            world.proxy_url() + "/api",
            headers={"Authorization": "Bearer alice-token"},
            ssl=world.client_ssl,
        ) as response:
            assert response.status == 502
            body = await response.json()
        assert "unreachable" in body["message"]
    finally:
        await client.close()


async def test_a_request_can_wait_for_a_reconnecting_agent(world: ProxyWorld) -> None:
    async def late_agent() -> None:
        await asyncio.sleep(0.5)
        await world.connect_agent()

    connecting = asyncio.create_task(late_agent())
    session = await world.registry.wait_for(CLUSTER_ID, 5.0)
    await connecting
    assert session is not None
    assert await world.registry.wait_for("deadbeef-0000-4000-8000-000000000009", 0.2) is None
