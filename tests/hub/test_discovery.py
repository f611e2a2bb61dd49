"""Discovery, OpenAPI, version, metrics and health as clients decode them (real kubectl too)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clusternet_aa.hub.server import HubServer
from clusternet_aa.hub.settings import HubSettings
from tests.hub import certs
from tests.hub.conftest import PKI, Caller, HubFactory

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
GV = "/apis/proxies.clusternet.io/v1alpha1"
AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)


def kubeconfig_for(server: HubServer, user: certs.Pair, directory: Path) -> Path:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hub",
                "cluster": {
                    "server": server.url,
                    "certificate-authority-data": b64(server.hub.serving.cert_pem),
                },
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": b64(user.cert_pem),
                    "client-key-data": b64(user.key_pem),
                },
            }
        ],
        "contexts": [{"name": "hub", "context": {"cluster": "hub", "user": "u"}}],
        "current-context": "hub",
    }
    path = directory / "hub.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path


async def kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(kubeconfig.parent)}
    process = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def user_kubeconfig(hub: HubServer, pki: PKI, tmp_path: Path) -> Path:
    return kubeconfig_for(hub, certs.issue(pki.client_ca, "viewer"), tmp_path)


async def test_kubectl_get_raw_discovery(user_kubeconfig: Path) -> None:
    code, out, err = await kubectl(user_kubeconfig, "get", "--raw", GV)
    assert code == 0, err
    document = json.loads(out)
    assert document["kind"] == "APIResourceList"
    assert document["groupVersion"] == "proxies.clusternet.io/v1alpha1"
    by_name = {r["name"]: r for r in document["resources"]}
    assert by_name["sockets"] == {
        "name": "sockets",
        "singularName": "socket",
        "namespaced": False,
        "kind": "Socket",
        "verbs": ["create", "delete", "get", "patch", "update"],
        "shortNames": ["ss"],
        "categories": ["clusternet"],
    }
    assert by_name["sockets/proxy"]["kind"] == "Socket"
    code, out, err = await kubectl(user_kubeconfig, "get", "--raw", "/apis/proxies.clusternet.io")
    assert code == 0, err
    assert json.loads(out)["preferredVersion"]["groupVersion"] == "proxies.clusternet.io/v1alpha1"


async def test_kubectl_api_resources(user_kubeconfig: Path) -> None:
    code, out, err = await kubectl(user_kubeconfig, "api-resources", "--no-headers")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows == [["sockets", "ss", "proxies.clusternet.io/v1alpha1", "false", "Socket"]]
    code, out, err = await kubectl(user_kubeconfig, "api-resources", "--categories=clusternet",
                                   "-o", "name")  # fmt: skip
    assert code == 0, err
    assert out.split() == ["sockets.proxies.clusternet.io"]


async def test_aggregated_discovery_negotiation(call: Caller) -> None:
    reply = await call("/apis", headers={"Accept": AGGREGATED})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert reply.body["kind"] == "APIGroupDiscoveryList"
    resource = reply.body["items"][0]["versions"][0]["resources"][0]
    assert resource["resource"] == "sockets"
    assert resource["scope"] == "Cluster"
    assert resource["subresources"][0]["subresource"] == "proxy"
    older = await call("/apis", headers={"Accept": AGGREGATED.split(",", 1)[1]})
    assert older.headers["Content-Type"].endswith("v=v2beta1;as=APIGroupDiscoveryList")
    assert older.body["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    for accept in ("application/json", "", "*/*", "application/json, " + AGGREGATED):
        legacy = await call("/apis", headers={"Accept": accept} if accept else None)
        assert legacy.headers["Content-Type"].startswith("application/json")
        assert "g=apidiscovery" not in legacy.headers["Content-Type"]
        assert legacy.body["kind"] == "APIGroupList", accept


async def test_openapi_documents(call: Caller) -> None:
    v2 = await call("/openapi/v2", headers={"Accept": "application/json"})
    assert v2.status == 200
    assert v2.body["swagger"] == "2.0"
    definition = next(iter(v2.body["definitions"].values()))
    assert definition["x-kubernetes-group-version-kind"][0]["kind"] == "Socket"
    root = await call("/openapi/v3")
    url = root.body["paths"]["apis/proxies.clusternet.io/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/proxies.clusternet.io/v1alpha1?hash=")
    v3 = await call(url)
    assert v3.status == 200
    assert v3.body["openapi"].startswith("3.")
    assert v3.headers["Cache-Control"] == "public, immutable"
    stale = await call("/openapi/v3/apis/proxies.clusternet.io/v1alpha1?hash=OLD")
    assert stale.status == 200  # kube would redirect; the hub never does
    assert stale.body == v3.body


async def test_version_and_errors_are_kube_shaped(call: Caller, pki: PKI) -> None:
    version = await call("/version")
    assert {"major", "minor", "gitVersion", "platform"} <= set(version.body)
    user = certs.issue(pki.client_ca, "someone")
    missing = await call("/apis/nope.example.io/v1", client=user)
    assert missing.status == 404
    assert missing.body["kind"] == "Status"
    wrong_method = await call(GV, method="DELETE", client=user)
    assert wrong_method.status == 405
    assert wrong_method.body["reason"] == "MethodNotAllowed"
    for path in ("/apis/", GV + "/", "/healthz/"):
        reply = await call(path)
        assert not 300 <= reply.status < 400, path


async def test_metrics_parse(call: Caller, hub: HubServer) -> None:
    hub.hub.metrics.tunnel_opened("c1")
    hub.hub.metrics.stream_opened("http")
    hub.hub.metrics.bytes_transferred("to_agent", 1234)
    hub.hub.metrics.request_finished("get", 200, 0.02)
    hub.hub.metrics.tunnel_closed("c1", 90.0)
    reply = await call("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("clusternet_socket_connections_count", ())] == 0
    assert samples[("clusternet_socket_connections_duration_seconds_count", ())] == 1
    assert (
        samples[("clusternet_socket_connections_duration_seconds_bucket", (("le", "240.0"),))] == 1
    )
    assert samples[("clusternet_socket_streams", (("kind", "http"),))] == 1
    assert samples[("clusternet_socket_bytes_total", (("direction", "to_agent"),))] == 1234
    assert samples[("clusternet_proxy_requests_total", (("code", "200"), ("verb", "get")))] == 1
    assert "process_cpu_seconds" in families
    openmetrics = await call("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


async def test_health_endpoints(call: Caller, hub: HubServer) -> None:
    assert (await call("/healthz")).text == "ok"
    verbose = await call("/readyz?verbose")
    assert verbose.status == 200
    assert "[+]informer-sync ok" in verbose.text
    assert verbose.text.endswith("readyz check passed\n")
    assert (await call("/readyz/serving-cert")).text == "ok"
    assert (await call("/readyz/nope")).status == 404
    hub.hub.health.shutting_down = True
    down = await call("/readyz")
    assert down.status == 500
    assert "[-]shutdown failed: reason withheld" in down.text
    assert (await call("/readyz?exclude=shutdown")).status == 200
    assert (await call("/livez")).status == 200


async def test_not_ready_until_the_parent_answers(
    start_hub: HubFactory, tmp_path: Path, parent_kubeconfig: Path
) -> None:
    """An unreachable parent: alive, but not ready (informers never synced)."""
    document = yaml.safe_load(parent_kubeconfig.read_text())
    document["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    broken = tmp_path / "broken.kubeconfig"
    broken.write_text(yaml.safe_dump(document))
    server = await start_hub(HubSettings(bind_address="127.0.0.1", secure_port=0,
                                         kubeconfig=broken))  # fmt: skip
    call = Caller(server)
    assert (await call("/livez")).status == 200
    ready = await call("/readyz?verbose")
    assert ready.status == 500
    assert "[-]informer-sync failed: reason withheld" in ready.text
    assert ready.text.endswith("readyz check failed\n")
    good = await start_hub(HubSettings(bind_address="127.0.0.1", secure_port=0,
                                       kubeconfig=parent_kubeconfig))  # fmt: skip
    informer = good.hub.trust_informer
    assert informer is not None
    assert await informer.wait_synced(5)
    assert (await Caller(good)("/readyz")).status == 200


async def test_socket_connection_gate_off_is_503(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    from dataclasses import replace

    from tests.hub.conftest import flag_settings

    settings = replace(
        flag_settings(pki, parent_kubeconfig), feature_gates={"SocketConnection": False}
    )
    server = await start_hub(settings)
    user = certs.issue(pki.client_ca, "root", orgs=("system:masters",))
    reply = await Caller(server)(GV + "/sockets/c1/proxy/direct/api", client=user)
    assert reply.status == 503
    assert reply.body["message"] == (
        "featuregate SocketConnection has not been enabled on the server side"
    )
