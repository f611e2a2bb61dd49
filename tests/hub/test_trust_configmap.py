"""Trust from the parent's ConfigMap: kubesim's published front proxy, and live changes."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiohttp

from clusternet_aa.hub.server import HubServer
from clusternet_aa.hub.settings import AuthSettings, HubSettings
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.hub import certs
from tests.hub.conftest import Caller, HubFactory, grant

PROXY = "/apis/proxies.clusternet.io/v1alpha1/sockets/c1/proxy/"
CM_PATH = "/api/v1/namespaces/default/configmaps"


async def _until(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.05)


async def test_trusts_what_kubesim_publishes(
    start_hub: HubFactory, sim: KubesimServer, parent_kubeconfig: Path
) -> None:
    """No CA flags: the hub reads kube-system/extension-apiserver-authentication as kube does."""
    await grant(sim, "everyone", [{"kind": "Group", "name": "system:authenticated"}])
    server = await start_hub(
        HubSettings(bind_address="127.0.0.1", secure_port=0, kubeconfig=parent_kubeconfig)
    )
    informer = server.hub.trust_informer
    assert informer is not None
    assert await informer.wait_synced(5)
    call = Caller(server)
    front = certs.Pair(sim.pki.front_proxy_client.cert_pem, sim.pki.front_proxy_client.key_pem)
    reply = await call(PROXY, client=front, headers={"X-Remote-User": "via-aggregator"})
    assert reply.status == 200, reply.text
    assert reply.body["user"]["user"] == "via-aggregator"
    user_pair = sim.pki.issue_client_cert("carol", ["qa"])
    reply = await call(PROXY, client=certs.Pair(user_pair.cert_pem, user_pair.key_pem))
    assert reply.body["user"]["user"] == "carol"
    assert reply.body["user"]["groups"] == ["qa", "system:authenticated"]


async def test_configmap_changes_take_effect(
    start_hub: HubFactory, sim: KubesimServer, parent_kubeconfig: Path
) -> None:
    """Allowed names and the CA are re-read live; a removed CA stops being trusted at once."""
    await grant(sim, "everyone", [{"kind": "Group", "name": "system:authenticated"}])
    ca1, ca2 = certs.make_ca("front-ca-1"), certs.make_ca("front-ca-2")
    data = {
        "requestheader-client-ca-file": ca1.cert_pem.decode(),
        "requestheader-allowed-names": json.dumps(["front-proxy-client"]),
        "requestheader-username-headers": json.dumps(["X-Remote-User"]),
    }
    async with await KubeClient.from_kubeconfig(parent_kubeconfig) as kube:
        await kube.request("POST", CM_PATH, body={"metadata": {"name": "hub-auth"}, "data": data})
        server: HubServer = await start_hub(
            HubSettings(
                bind_address="127.0.0.1",
                secure_port=0,
                kubeconfig=parent_kubeconfig,
                auth=AuthSettings(configmap_namespace="default", configmap_name="hub-auth"),
            )
        )
        call = Caller(server)
        proxy1 = certs.issue(ca1, "front-proxy-client")
        renamed = certs.issue(ca1, "new-proxy")
        headers = {"X-Remote-User": "alice"}

        async def status(client: certs.Pair) -> int:
            """The HTTP status, or 0 when the TLS handshake refused the certificate."""
            try:
                return (await call(PROXY, client=client, headers=headers)).status
            except (aiohttp.ClientConnectionError, ssl.SSLError):
                return 0

        await _until(lambda: _is(status(proxy1), 200))
        assert await status(renamed) == 401

        data["requestheader-allowed-names"] = json.dumps(["new-proxy"])
        await kube.request("PUT", f"{CM_PATH}/hub-auth",
                           body={"metadata": {"name": "hub-auth"}, "data": data})  # fmt: skip
        await _until(lambda: _is(status(renamed), 200))
        assert await status(proxy1) == 401

        # a new CA: handshakes accept it, and the old CA's certificates are no longer trusted
        data["requestheader-client-ca-file"] = ca2.cert_pem.decode()
        data["requestheader-allowed-names"] = "[]"  # any CN
        await kube.request("PUT", f"{CM_PATH}/hub-auth",
                           body={"metadata": {"name": "hub-auth"}, "data": data})  # fmt: skip
        await _until(lambda: _is(status(certs.issue(ca2, "anyone")), 200))
        assert await status(renamed) == 401  # CA 1 is still in OpenSSL's store; Python says no

        await kube.request("DELETE", f"{CM_PATH}/hub-auth")
        await _until(lambda: _is(status(certs.issue(ca2, "anyone")), 401))


async def _is(awaitable, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await awaitable == expected
