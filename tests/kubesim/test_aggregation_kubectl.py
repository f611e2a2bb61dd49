"""Real kubectl against kubesim with an aggregated group served by the extension-server stub."""

from __future__ import annotations

import json

from tests.kubesim.conftest import Kubectl
from tests.kubesim.test_aggregation import BASE, GROUP, VERSION, Stub
from tests.kubesim.test_aggregation import stub as stub


async def test_get_raw_through_aggregation(kubectl: Kubectl, stub: Stub) -> None:
    listing = await kubectl.run("get", "--raw", f"{BASE}/namespaces/default/things?limit=3")
    assert json.loads(listing.stdout)["kind"] == "ThingList"
    seen = stub.seen[-1]
    assert seen.authenticated
    assert seen.user == "admin"
    assert seen.path_qs == f"{BASE}/namespaces/default/things?limit=3"
    discovery = await kubectl.run("get", "--raw", BASE)
    assert json.loads(discovery.stdout)["groupVersion"] == f"{GROUP}/{VERSION}"


async def test_api_resources_lists_the_aggregated_group(kubectl: Kubectl, stub: Stub) -> None:
    result = await kubectl.run("api-resources", "--api-group", GROUP, "--no-headers")
    [line] = result.stdout.splitlines()
    assert line.split() == ["things", "th", f"{GROUP}/{VERSION}", "true", "Thing"]
    versions = await kubectl.run("api-versions")
    assert f"{GROUP}/{VERSION}" in versions.stdout.split()


async def test_get_aggregated_resource(kubectl: Kubectl, stub: Stub) -> None:
    result = await kubectl.run("get", "th", "-n", "default", "-o", "json")
    assert json.loads(result.stdout)["items"] == []
    assert any(s.path_qs.startswith(f"{BASE}/namespaces/default/things") for s in stub.seen)
