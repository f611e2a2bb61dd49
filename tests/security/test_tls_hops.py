"""TLS is verified on every hop once credentials exist: a server with a certificate from
another CA (a man in the middle) is refused before any credential is sent.

Hops: agent -> parent (the tunnel, after registration: the approved CA), agent -> child (the
CA of its kubeconfig), hub -> parent (the kube client), executor -> child (given CA, also for
upgrades and Clusternet client-certificate extras). The aggregator -> hub hop (caBundle) is
proved by ``tests/kubesim/test_aggregation.py::test_ca_bundle_is_verified``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web

from clusternet_aa.agent.agent import ChildCredentials
from clusternet_aa.agent.registration import Credentials
from clusternet_aa.kube.client import KubeClient, load_configuration
from clusternet_aa.proxy import forwarder
from clusternet_aa.proxy.executor import ChildApiserver, Executor, _context_with_client_cert
from clusternet_aa.tunnel import websocket
from tests.proxy.conftest import CLUSTER_ID, ProxyWorld

SECRET = "sekret-token-must-not-leave"


class Mitm:
    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.url = ""


@pytest.fixture
async def mitm() -> AsyncIterator[Mitm]:
    """A TLS server for 127.0.0.1 whose certificate comes from a CA nobody trusts."""
    result = Mitm()

    async def record(request: web.Request) -> web.Response:
        result.seen.append(request)
        return web.json_response({"kind": "Status"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1", "localhost").configure_cert(context)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    result.url = f"https://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield result
    await runner.cleanup()


def _kubeconfig(path: Path, server: str, ca_pem: bytes) -> Path:
    ca_file = path.parent / "ca.crt"
    ca_file.write_bytes(ca_pem)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": server, "certificate-authority": str(ca_file)},
                    }
                ],
                "users": [{"name": "u", "user": {"token": SECRET}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


async def test_agent_to_parent_tunnel_refuses_a_server_outside_the_approved_ca(
    mitm: Mitm, world: ProxyWorld
) -> None:
    approved = Credentials(parent_url=mitm.url, token=SECRET, ca_pem=world.ca_pem)
    for context in (approved.ssl_context(), Credentials(parent_url=mitm.url).ssl_context()):
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await websocket.connect(
                    client,
                    mitm.url.replace("https", "wss") + f"{forwarder.SOCKETS_PREFIX}{CLUSTER_ID}",
                    ssl_context=context,
                    headers={"Authorization": f"Bearer {SECRET}"},
                )
    assert mitm.seen == []
    assert SECRET not in repr(approved)


async def test_agent_to_child_credentials_verify_the_kubeconfig_ca(
    mitm: Mitm, world: ProxyWorld, tmp_path: Path
) -> None:
    configuration = await load_configuration(
        _kubeconfig(tmp_path / "child.kubeconfig", mitm.url, world.child.ca_pem)
    )
    context = ChildCredentials(configuration).ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await client.get(mitm.url + "/api", ssl=context)
    assert mitm.seen == []


async def test_hub_to_parent_kube_client_verifies_the_kubeconfig_ca(
    mitm: Mitm, world: ProxyWorld, tmp_path: Path
) -> None:
    kubeconfig = _kubeconfig(tmp_path / "parent.kubeconfig", mitm.url, world.child.ca_pem)
    async with await KubeClient.from_kubeconfig(kubeconfig) as kube:
        with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
            await kube.request("GET", "/api")
    assert mitm.seen == []


@pytest.mark.parametrize("upgrade", [False, True])
async def test_executor_to_child_verifies_the_given_ca_for_requests_and_upgrades(
    mitm: Mitm, world: ProxyWorld, upgrade: bool
) -> None:
    executor = Executor(
        ChildApiserver(url=mitm.url, ssl_context=world.child_ssl, token=lambda: SECRET)
    )
    await executor.__aenter__()
    world.executors.append(executor)
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
        headers = {"Authorization": "Bearer alice-token"}
        if upgrade:
            headers |= {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
        async with client.post(
            world.proxy_url() + "/api/v1/namespaces/default/pods/p/exec?command=ls",
            headers=headers,
            ssl=world.client_ssl,
        ) as response:
            assert response.status == 502
            body = await response.json()
        assert body["kind"] == "Status"
        assert SECRET not in str(body)
    finally:
        await client.close()
    assert mitm.seen == []


def test_clusternet_certificate_extras_keep_verifying_the_child(world: ProxyWorld) -> None:
    pair = world.child.pki.issue_client_cert("someone", [])
    context = _context_with_client_cert(world.child_ssl, pair.cert_pem, pair.key_pem)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    default = _context_with_client_cert(None, pair.cert_pem, pair.key_pem)
    assert default.verify_mode is ssl.CERT_REQUIRED
