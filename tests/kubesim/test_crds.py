"""CustomResourceDefinitions: serving, status subresource, printer columns, deletion."""

from __future__ import annotations

import copy
from typing import Any

from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.kubesim.conftest import Raw

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


def widget_crd(scope: str = "Namespaced") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {
                "plural": "widgets",
                "singular": "widget",
                "kind": "Widget",
                "shortNames": ["wd"],
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def widget(name: str, size: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"size": size},
        "status": {"ignored": True},
    }


async def test_crd_lifecycle(raw: Raw, sim: KubesimServer) -> None:
    assert (await raw.get(WIDGETS)).status == 404
    created = await raw.post(CRDS, widget_crd())
    assert created.status == 201
    conditions = {c["type"]: c["status"] for c in created.body["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert created.body["status"]["acceptedNames"]["kind"] == "Widget"

    group = await raw.get("/apis/example.com/v1")
    assert group.body["groupVersion"] == "example.com/v1"
    entries = {r["name"]: r for r in group.body["resources"]}
    assert entries["widgets"]["shortNames"] == ["wd"]
    assert entries["widgets/status"]["verbs"] == ["get", "patch", "update"]

    made = await raw.post(WIDGETS, widget("one", 3))
    assert made.status == 201
    assert "status" not in made.body, "status is reset on create with a status subresource"
    assert made.body["metadata"]["generation"] == 1
    obj = made.body
    no_rv = copy.deepcopy(obj)
    del no_rv["metadata"]["resourceVersion"]
    assert (await raw.put(f"{WIDGETS}/one", no_rv)).status == 422, "CRs need a resourceVersion"
    obj["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    obj = (await raw.put(f"{WIDGETS}/one/status", obj)).body
    assert obj["status"]["conditions"][0]["status"] == "True"
    assert obj["metadata"]["generation"] == 1
    obj["spec"]["size"] = 4
    obj = (await raw.put(f"{WIDGETS}/one", obj)).body
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["conditions"][0]["type"] == "Ready"

    table = await raw.get(
        WIDGETS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    assert [c["name"] for c in table.body["columnDefinitions"]] == ["Name", "Size", "Ready"]
    assert table.body["rows"][0]["cells"] == ["one", 4, "True"]

    assert (await raw.delete(f"{CRDS}/widgets.example.com")).status == 200
    await sim.settle()
    assert (await raw.get(f"{CRDS}/widgets.example.com")).status == 404
    assert (await raw.get(WIDGETS)).status == 404
    assert (await raw.get("/apis/example.com/v1")).status == 404
    again = await raw.post(CRDS, widget_crd())
    assert again.status == 201
    listed = await raw.get(WIDGETS)
    assert listed.body["items"] == [], "objects of a deleted CRD do not come back"


async def test_invalid_crds_are_rejected(raw: Raw) -> None:
    wrong_name = widget_crd()
    wrong_name["metadata"]["name"] = "gadgets.example.com"
    reply = await raw.post(CRDS, wrong_name)
    assert reply.status == 422
    assert reply.reason == "Invalid"
    two_storage = widget_crd()
    version = copy.deepcopy(two_storage["spec"]["versions"][0])
    version["name"] = "v2"
    two_storage["spec"]["versions"].append(version)
    assert (await raw.post(CRDS, two_storage)).status == 422


async def test_cluster_scoped_crd_and_merge_patch(raw: Raw) -> None:
    await raw.post(CRDS, widget_crd("Cluster"))
    obj = widget("c1")
    del obj["metadata"]["namespace"]
    made = await raw.post("/apis/example.com/v1/widgets", obj)
    assert made.status == 201
    assert "namespace" not in made.body["metadata"]
    patched = await raw.patch(
        "/apis/example.com/v1/widgets/c1", {"spec": {"size": 9}}, "application/merge-patch+json"
    )
    assert patched.status == 200
    assert patched.body["spec"]["size"] == 9
    smp = await raw.patch(
        "/apis/example.com/v1/widgets/c1",
        {"spec": {"size": 1}},
        "application/strategic-merge-patch+json",
    )
    assert smp.status == 415, "strategic merge patch is refused for custom resources"
