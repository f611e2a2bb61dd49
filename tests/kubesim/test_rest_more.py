"""More REST semantics against kube-apiserver's: Secret stringData, namespace field selectors."""

from __future__ import annotations

from typing import Any

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


async def test_deployment_strategy_and_pull_policy_defaults(raw: Raw) -> None:
    """kube's SetDefaults_Deployment and SetDefaults_Container, for kubectl's generator objects."""
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "strategy": {},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    made = await raw.post("/apis/apps/v1/namespaces/default/deployments", deployment)
    assert made.body["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    recreate = dict(deployment, metadata={"name": "r"})
    recreate["spec"] = dict(deployment["spec"], strategy={"type": "Recreate"})
    made = await raw.post("/apis/apps/v1/namespaces/default/deployments", recreate)
    assert made.body["spec"]["strategy"] == {"type": "Recreate"}
    images = {
        "nginx": "Always",
        "nginx:latest": "Always",
        "registry:5000/team/nginx": "Always",
        "nginx:1.27": "IfNotPresent",
        "registry:5000/nginx:1.27": "IfNotPresent",
        "nginx@sha256:" + "0" * 64: "IfNotPresent",
    }
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    pod["spec"] = {"containers": containers}
    made = await raw.post("/api/v1/namespaces/default/pods", pod)
    policies = [c["imagePullPolicy"] for c in made.body["spec"]["containers"]]
    assert policies == list(images.values())


async def test_empty_metadata_collections_are_not_kept(raw: Raw) -> None:
    """Go's omitempty: kube never returns ``labels: {}`` or ``finalizers: []``."""
    cm = configmap("empty")
    cm["metadata"].update(labels={}, annotations={}, finalizers=[], ownerReferences=[])
    made = await raw.post("/api/v1/namespaces/default/configmaps", cm)
    assert made.status == 201
    for key in ("labels", "annotations", "finalizers", "ownerReferences"):
        assert key not in made.body["metadata"]
    # What kubectl diff/apply send for an object created without last-applied annotations.
    patched = await raw.patch(
        "/api/v1/namespaces/default/configmaps/empty",
        {"metadata": {"annotations": {}}},
        "application/strategic-merge-patch+json",
    )
    assert "annotations" not in patched.body["metadata"]
    assert patched.body["metadata"]["resourceVersion"] == made.body["metadata"]["resourceVersion"]
