"""The hub behind kubesim's aggregation layer, as in a real parent cluster.

kubesim plays kube-apiserver: it probes the hub's discovery with its front-proxy certificate,
proxies ``/apis/proxies.clusternet.io/v1alpha1/...`` to it with ``X-Remote-*`` headers, and
publishes the trust the hub needs in its ConfigMap. The hub gets no CA flags at all.
"""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusternet_aa.hub.server import HubServer
from clusternet_aa.hub.settings import HubSettings
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.errors import APIConflict
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.hub.conftest import HubFactory, grant
from tests.hub.test_discovery import kubectl

APISERVICE = "v1alpha1.proxies.clusternet.io"
GV = "/apis/proxies.clusternet.io/v1alpha1"


async def register(kube: KubeClient, port: int, ca_pem: bytes | None = None) -> None:
    """What Clusternet's hub manifests create: Service, Endpoints, APIService (verified with
    ``ca_pem`` as its caBundle, or insecureSkipTLSVerify without one)."""
    namespace = "clusternet-system"
    with contextlib.suppress(APIConflict):
        await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": namespace}})
    await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/services",
        body={
            "metadata": {"name": "clusternet-hub"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
    )
    await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/endpoints",
        body={
            "metadata": {"name": "clusternet-hub"},
            "subsets": [
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}
            ],
        },
    )
    await kube.request(
        "POST",
        "/apis/apiregistration.k8s.io/v1/apiservices",
        body={
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": APISERVICE},
            "spec": {
                "group": "proxies.clusternet.io",
                "version": "v1alpha1",
                "service": {"namespace": namespace, "name": "clusternet-hub", "port": 443},
                "groupPriorityMinimum": 1000,
                "versionPriority": 100,
                **(
                    {"caBundle": base64.b64encode(ca_pem).decode()}
                    if ca_pem
                    else {"insecureSkipTLSVerify": True}
                ),
            },
        },
    )


@pytest.fixture
async def aggregated(
    sim: KubesimServer, parent_kubeconfig: Path, start_hub: HubFactory
) -> HubServer:
    await grant(sim, "socketsproxy", [{"kind": "Group", "name": "system:authenticated"}])
    server = await start_hub(
        HubSettings(bind_address="127.0.0.1", secure_port=0, kubeconfig=parent_kubeconfig)
    )
    async with await KubeClient.from_kubeconfig(parent_kubeconfig) as kube:
        await register(kube, server.port)
    await sim.aggregation.wait_available(APISERVICE)
    return server


async def test_parent_serves_the_hubs_discovery(
    aggregated: HubServer, parent_kubeconfig: Path
) -> None:
    code, out, err = await kubectl(parent_kubeconfig, "get", "--raw", GV)
    assert code == 0, err
    assert {r["name"] for r in json.loads(out)["resources"]} == {"sockets", "sockets/proxy"}
    code, out, err = await kubectl(parent_kubeconfig, "api-resources", "--api-group",
                                   "proxies.clusternet.io", "--no-headers")  # fmt: skip
    assert code == 0, err
    assert out.split() == ["sockets", "ss", "proxies.clusternet.io/v1alpha1", "false", "Socket"]


async def test_identity_and_clusternet_extras_arrive_through_the_front_proxy(
    aggregated: HubServer, sim: KubesimServer
) -> None:
    """Clusternet's kubeconfig trick: impersonate ``clusternet`` with a child token in extras."""
    headers = {
        "Authorization": f"Bearer {sim.admin_token}",
        "Impersonate-User": "clusternet",
        "Impersonate-Group": "child-users",
        "Impersonate-Extra-Clusternet-Token": "child-token",
    }
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"{sim.url}{GV}/sockets/c1/proxy/direct/api/v1/namespaces?limit=1"
        async with session.get(url, headers=headers) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
    user = body["user"]
    assert user["user"] == "clusternet"
    assert set(user["groups"]) == {"child-users", "system:authenticated"}
    assert user["extra"] == {"clusternet-token": ["child-token"]}
    forwarded = {name.lower() for name, _ in body["headers"]}
    assert not {h for h in forwarded if h.startswith(("x-remote-", "impersonate-"))}
    assert "authorization" not in forwarded
