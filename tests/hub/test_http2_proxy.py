"""HTTP/2 in front of the real proxy: kubectl (Go's client negotiates h2 by itself) and many
watches on one connection, through the forwarder, a real websocket tunnel, the agent executor
and a kubesim child. The agent's tunnel arrives on the same listener over HTTP/1.1."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from clusternet_aa.apiserver.http2 import Http2Listener
from clusternet_aa.apiserver.status import status_middleware
from clusternet_aa.apiserver.tls import offer_alpn
from clusternet_aa.proxy import routes
from clusternet_aa.proxy.tunnels import TunnelRegistry
from tests.hub.test_http2 import H2Client
from tests.proxy.conftest import (
    CLUSTER_ID,
    KUBECTL,
    ProxyWorld,
    StaticDirectory,
    TableAuthorizer,
    start_child,
    token_authn,
)

pytestmark = pytest.mark.usefixtures("kubectl_available")

ADMIN = [("authorization", "Bearer admin-token")]


@pytest.fixture
def kubectl_available() -> None:
    if not Path(KUBECTL).exists():
        pytest.skip("kubectl is not installed")


@dataclass
class H2World:
    world: ProxyWorld
    listener: Http2Listener
    port: int

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.world.ca_pem.decode())

    def watch_path(self, namespace: str = "default") -> str:
        base = f"/apis/proxies.clusternet.io/v1alpha1/sockets/{CLUSTER_ID}/proxy/direct"
        return f"{base}/api/v1/namespaces/{namespace}/configmaps?watch=true"


@pytest.fixture
async def h2world(tmp_path: Path) -> AsyncIterator[H2World]:
    child = await start_child(tmp_path)
    registry = TunnelRegistry()
    authorizer = TableAuthorizer(
        {
            ("system:serviceaccount:clusternet-system:agent", "create", "sockets", CLUSTER_ID),
            ("alice", "*", "sockets/proxy", "*"),
            ("admin-user", "*", "sockets/proxy", "*"),
        }
    )
    directory = StaticDirectory({CLUSTER_ID})
    app = web.Application(middlewares=[status_middleware, token_authn])
    routes.add_routes(app, registry=registry, authorizer=authorizer, directory=directory)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    assert runner.server is not None
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    offer_alpn(server_ssl, http2=True)
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    listener = Http2Listener(runner.server)
    server = await asyncio.get_running_loop().create_server(
        listener, "127.0.0.1", 0, ssl=server_ssl
    )
    port = server.sockets[0].getsockname()[1]
    state = tmp_path / "kubeconfigs"
    state.mkdir()
    world = ProxyWorld(
        child,
        f"https://127.0.0.1:{port}",
        registry,
        authorizer,
        directory,
        state,
        child_ssl=ssl.create_default_context(cadata=child.ca_pem.decode()),
        client_ssl=client_ssl,
        ca_pem=ca.cert_pem.bytes(),
    )
    try:
        yield H2World(world, listener, port)
    finally:
        server.close()
        for session in world.agent_sessions:
            await session.close(grace=1)
        await registry.close_all(grace=1)
        for executor in world.executors:
            await executor.__aexit__(None, None, None)
        await asyncio.gather(listener.shutdown(1), runner.cleanup())
        await child.stop()


async def test_kubectl_get_and_watch_over_http2(h2world: H2World) -> None:
    world, listener = h2world.world, h2world.listener
    session = await world.connect_agent()
    # The agent's websocket tunnel came over HTTP/1.1 on the same listener.
    assert listener.http11_connections_total == 1
    result = await world.kubectl("alice-token", "get", "pods")
    assert result.returncode == 0, result.stderr
    assert "No resources found" in result.stderr + result.stdout
    assert listener.h2_connections_total == 1
    assert listener.h2_streams_total >= 1

    before = listener.h2_streams_total
    watcher = await asyncio.create_subprocess_exec(
        KUBECTL, "--kubeconfig", str(world.kubeconfig("admin-token")),
        "get", "configmaps", "--watch", "-o", "name",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # Wait until the watch stream is open at the hub, then make an event.
        for _ in range(200):
            if listener.h2_streams_total > before and listener.active_streams:
                break
            await asyncio.sleep(0.05)
        assert listener.active_streams >= 1
        created = await world.kubectl(
            "admin-token", "create", "configmap", "over-h2", "--from-literal=a=b"
        )
        assert created.returncode == 0, created.stderr
        assert watcher.stdout is not None
        while True:
            line = await asyncio.wait_for(watcher.stdout.readline(), 10)
            assert line, "kubectl's watch ended early"
            if b"over-h2" in line:
                break
        assert session.open_streams >= 1
    finally:
        watcher.terminate()
        await watcher.wait()
    # kubectl's exit resets (or closes) its stream: the tunnel stream behind it ends too.
    for _ in range(200):
        if session.open_streams == 0 and listener.active_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert listener.active_streams == 0
    assert session.open_streams == 0


async def test_many_watches_on_one_connection_and_reset_of_one(h2world: H2World) -> None:
    world, listener = h2world.world, h2world.listener
    session = await world.connect_agent()
    client = await H2Client.connect(h2world.port, h2world.client_context())
    try:
        ids = [client.request(h2world.watch_path(), headers=ADMIN) for _ in range(100)]
        for stream_id in ids:
            stream = await client.wait(stream_id, lambda s: s.status != 0)
            assert stream.status == 200
        assert listener.h2_connections_total == 1
        assert listener.active_streams == 100
        assert session.open_streams == 100

        async def event_everywhere(name: str, streams: list[int]) -> None:
            created = await world.kubectl(
                "admin-token", "create", "configmap", name, "--from-literal=a=b"
            )
            assert created.returncode == 0, created.stderr
            for stream_id in streams:
                stream = await client.wait(stream_id, lambda s: name.encode() in s.data)
                last = bytes(stream.data).strip().split(b"\n")[-1]
                assert json.loads(last)["object"]["metadata"]["name"] == name

        await event_everywhere("first", ids)
        gone, kept = ids[0], ids[1:]
        client.reset(gone)
        for _ in range(200):
            if session.open_streams == 99:
                break
            await asyncio.sleep(0.02)
        assert session.open_streams == 99  # the tunnel stream of the reset watch ended
        assert listener.active_streams == 99
        seen = len(client.streams[gone].data)
        await event_everywhere("second", kept)
        assert len(client.streams[gone].data) == seen
    finally:
        await client.close()


async def test_the_tunnel_endpoint_over_h2_is_a_status(h2world: H2World) -> None:
    client = await H2Client.connect(h2world.port, h2world.client_context())
    try:
        path = f"/apis/proxies.clusternet.io/v1alpha1/sockets/{CLUSTER_ID}"
        reply = await client.get(path, headers=[("authorization", "Bearer agent-token")])
        assert reply.status == 400
        assert reply.json()["kind"] == "Status"
        assert "websocket upgrade" in reply.json()["message"]
    finally:
        await client.close()
