"""Discovery documents compared with what kube-apiserver 1.37 serves."""

from __future__ import annotations

from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.kubesim.conftest import Raw

AGGREGATED = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


async def test_version_is_configurable() -> None:
    async with running_kubesim(KubesimConfig(git_version="v1.30.2", nodes=0)) as sim:
        import aiohttp

        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(sim.url + "/version") as reply,
        ):
            body = await reply.json()
    assert body["gitVersion"] == "v1.30.2"
    assert (body["major"], body["minor"]) == ("1", "30")


async def test_legacy_discovery(raw: Raw) -> None:
    api = (await raw.get("/api")).body
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]
    core = (await raw.get("/api/v1")).body
    assert core["groupVersion"] == "v1"
    resources = {r["name"]: r for r in core["resources"]}
    pods = resources["pods"]
    assert pods["kind"] == "Pod"
    assert pods["namespaced"] is True
    assert pods["shortNames"] == ["po"]
    assert pods["categories"] == ["all"]
    assert pods["singularName"] == "pod"
    assert sorted(pods["verbs"]) == sorted(
        ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    )
    assert resources["namespaces"]["namespaced"] is False
    assert "deletecollection" not in resources["namespaces"]["verbs"]
    assert resources["serviceaccounts/token"]["kind"] == "TokenRequest"
    assert resources["serviceaccounts/token"]["group"] == "authentication.k8s.io"
    assert [r["name"] for r in core["resources"]] == sorted(r["name"] for r in core["resources"])
    groups = (await raw.get("/apis")).body
    assert groups["kind"] == "APIGroupList"
    names = [g["name"] for g in groups["groups"]]
    assert "" not in names
    assert {"apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io"} <= set(names)
    apps = (await raw.get("/apis/apps")).body
    assert apps["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    deployments = {r["name"]: r for r in (await raw.get("/apis/apps/v1")).body["resources"]}
    assert deployments["deployments/scale"]["group"] == "autoscaling"
    assert deployments["deployments/scale"]["kind"] == "Scale"
    reviews = {
        r["name"]: r for r in (await raw.get("/apis/authorization.k8s.io/v1")).body["resources"]
    }
    assert reviews["selfsubjectaccessreviews"]["verbs"] == ["create"]
    assert (await raw.get("/apis/nothing.example.com")).status == 404
    assert (await raw.get("/apis/apps/v9")).status == 404


async def test_aggregated_discovery(raw: Raw) -> None:
    reply = await raw.get("/apis", headers={"Accept": AGGREGATED})
    assert reply.headers["Content-Type"] == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert reply.body["kind"] == "APIGroupDiscoveryList"
    groups = {g["metadata"]["name"]: g for g in reply.body["items"]}
    apps = groups["apps"]["versions"][0]
    assert apps["version"] == "v1"
    deploy = next(r for r in apps["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced"
    assert deploy["responseKind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    subs = {s["subresource"]: s for s in deploy["subresources"]}
    assert subs["scale"]["responseKind"]["kind"] == "Scale"
    core = await raw.get("/api", headers={"Accept": AGGREGATED})
    assert [i["versions"][0]["version"] for i in core.body["items"]] == ["v1"]
    plain = await raw.get("/apis", headers={"Accept": "application/json"})
    assert plain.body["kind"] == "APIGroupList"


async def test_health_and_openapi(raw: Raw) -> None:
    health = await raw.get("/healthz")
    assert health.status == 200
    assert health.body == "ok"
    v3 = await raw.get("/openapi/v3")
    assert "apis/apps/v1" in v3.body["paths"]
    v2 = await raw.get("/openapi/v2")
    assert v2.body["swagger"] == "2.0"
