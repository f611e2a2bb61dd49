"""Per-kind validation of built-in objects: the 422s kube-apiserver gives for common mistakes."""

from __future__ import annotations

import base64
from typing import Any

from tests.kubesim.conftest import Kubectl, Raw, configmap

PODS = "/api/v1/namespaces/default/pods"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
CM = "/api/v1/namespaces/default/configmaps"


def deployment(name: str, selector: Any, labels: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
        }
    }
    if selector is not None:
        spec["selector"] = selector
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


async def test_required_fields_of_a_pod(raw: Raw) -> None:
    empty = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    reply = await raw.post(PODS, empty)
    assert reply.status == 422
    assert reply.body["reason"] == "Invalid"
    assert reply.body["message"] == 'Pod "p" is invalid: spec.containers: Required value'
    assert reply.body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers"}
    ]
    nameless = dict(empty, spec={"containers": [{"image": "i:1", "ports": [{"name": "x"}]}]})
    reply = await raw.post(PODS, nameless)
    assert reply.body["message"] == (
        'Pod "p" is invalid: [spec.containers[0].name: Required value, '
        "spec.containers[0].ports[0].containerPort: Required value]"
    )
    # Status is the kubelet's business: nothing in it is required on create. A condition
    # without its list key defeats field tracking; kube still writes the object, without
    # managedFields (fieldmanager.UpdateNoErrors).
    fine = dict(empty, spec={"containers": [{"name": "c", "image": "i:1"}]})
    fine["status"] = {"conditions": [{"message": "no type"}]}
    created = await raw.post(PODS, fine)
    assert created.status == 201
    assert "managedFields" not in created.body["metadata"]


async def test_deployment_selector(raw: Raw) -> None:
    missing = await raw.post(DEPLOY, deployment("d1", None, {"a": "b"}))
    assert missing.status == 422
    assert (
        missing.body["message"] == 'Deployment.apps "d1" is invalid: spec.selector: Required value'
    )
    assert missing.body["details"]["group"] == "apps"
    mismatch = await raw.post(DEPLOY, deployment("d2", {"matchLabels": {"a": "b"}}, {"a": "c"}))
    assert mismatch.status == 422
    assert mismatch.body["message"] == (
        'Deployment.apps "d2" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"a":"c"}: `selector` does not match template `labels`'
    )
    empty = await raw.post(DEPLOY, deployment("d3", {}, {"a": "b"}))
    assert empty.status == 422
    assert "empty selector is invalid for deployment" in empty.body["message"]
    expressions = {"matchExpressions": [{"key": "a", "operator": "In", "values": ["b", "x"]}]}
    assert (await raw.post(DEPLOY, deployment("d4", expressions, {"a": "b"}))).status == 201
    made = (await raw.get(f"{DEPLOY}/d4")).body
    made["spec"]["template"]["metadata"]["labels"] = {"a": "z"}
    assert (await raw.put(f"{DEPLOY}/d4", made)).status == 422, "updates are validated too"
    patch = {"spec": {"template": {"metadata": {"labels": {"a": "y"}}}}}
    patched = await raw.patch(f"{DEPLOY}/d4", patch, "application/merge-patch+json")
    assert patched.status == 422, "and so are patches"
    # A status write carries only what the status needs.
    status = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": made["metadata"]}
    status["status"] = {"replicas": 1}
    assert (await raw.put(f"{DEPLOY}/d4/status", status)).status == 200


async def test_config_keys_and_sizes(raw: Raw) -> None:
    bad_key = await raw.post(CM, configmap("k", data={"bad key": "v"}))
    assert bad_key.status == 422
    assert bad_key.body["message"].startswith(
        'ConfigMap "k" is invalid: data[bad key]: Invalid value: "bad key": a valid config key '
        "must consist of alphanumeric characters"
    )
    big = await raw.post(CM, configmap("big", data={"a": "x" * (1024 * 1024 + 1)}))
    assert big.status == 422
    assert big.body["message"] == (
        'ConfigMap "big" is invalid: []: Too long: must have at most 1048576 bytes'
    )
    at_limit = await raw.post(CM, configmap("limit", data={"a": "x" * (1024 * 1024)}))
    assert at_limit.status == 201
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()},
    }
    too_big = await raw.post("/api/v1/namespaces/default/secrets", secret)
    assert too_big.status == 422
    assert too_big.body["message"] == (
        'Secret "s" is invalid: data: Too long: must have at most 1048576 bytes'
    )


async def test_rbac_required_fields(raw: Raw) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb"},
        "subjects": [{"kind": "User"}],
    }
    reply = await raw.post(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", binding
    )
    assert reply.status == 422
    assert reply.body["message"].startswith('RoleBinding.rbac.authorization.k8s.io "rb" is invalid')
    fields = {c["field"] for c in reply.body["details"]["causes"]}
    assert {"subjects[0].name", "roleRef"} <= fields


async def test_kubectl_shows_the_invalid_deployment(kubectl: Kubectl) -> None:
    manifest = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n"
        "  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: other}}\n"
        "    spec: {containers: [{name: c, image: 'nginx:1'}]}\n"
    )
    refused = await kubectl.run("apply", "-f", "-", stdin=manifest, check=False)
    assert refused.returncode == 1
    assert 'The Deployment "web" is invalid' in refused.stderr
    assert "`selector` does not match template `labels`" in refused.stderr
