"""More REST semantics against kube-apiserver's: Secret stringData, namespace field selectors."""

from __future__ import annotations

from tests.kubesim.conftest import Raw, configmap, names

SECRETS = "/api/v1/namespaces/default/secrets"


async def test_secret_string_data_is_merged_into_data(raw: Raw) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "sd"},
        "data": {"a": "b2xk", "c": "Yw=="},
        "stringData": {"a": "new", "d": "dee"},
    }
    created = await raw.post(SECRETS, secret)
    assert created.status == 201
    assert "stringData" not in created.body
    assert created.body["data"] == {"a": "bmV3", "c": "Yw==", "d": "ZGVl"}
    stored = (await raw.get(f"{SECRETS}/sd")).body
    assert stored["data"] == created.body["data"]
    stored["stringData"] = {"c": "see"}
    updated = await raw.put(f"{SECRETS}/sd", stored)
    assert updated.body["data"]["c"] == "c2Vl"
    assert "stringData" not in updated.body
    patched = await raw.patch(
        f"{SECRETS}/sd", {"stringData": {"e": "e"}}, "application/merge-patch+json"
    )
    assert patched.body["data"]["e"] == "ZQ=="
    assert "stringData" not in patched.body
    bad = dict(secret, metadata={"name": "bad"}, stringData={"n": 1})
    assert (await raw.post(SECRETS, bad)).status == 400


async def test_field_selector_on_namespace_across_namespaces(raw: Raw) -> None:
    await raw.post("/api/v1/namespaces/default/configmaps", configmap("here"))
    only = await raw.get("/api/v1/configmaps?fieldSelector=metadata.namespace%3Dkube-system")
    assert only.status == 200
    assert {i["metadata"]["namespace"] for i in only.body["items"]} == {"kube-system"}
    others = await raw.get("/api/v1/configmaps?fieldSelector=metadata.namespace!%3Ddefault")
    namespaces = {i["metadata"]["namespace"] for i in others.body["items"]}
    assert "default" not in namespaces
    assert "kube-system" in namespaces
    both = await raw.get(
        "/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Dhere"
    )
    assert names(both.body["items"]) == ["here"]
    # Within a namespace the selector can only narrow further.
    narrowed = await raw.get(
        "/api/v1/namespaces/default/configmaps?fieldSelector=metadata.namespace%3Dkube-system"
    )
    assert narrowed.body["items"] == []
    # Cluster-scoped kinds have no metadata.namespace field label, as in kube.
    refused = await raw.get("/api/v1/namespaces?fieldSelector=metadata.namespace%3Dx")
    assert refused.status == 400
    assert refused.body["message"] == "field label not supported: metadata.namespace"
