"""Every built-in issue 3 names is discovered as kube-apiserver 1.37 describes it."""

from __future__ import annotations

import pytest

from tests.kubesim.conftest import Raw

CRUD = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
REVIEW = ["create"]
NS_VERBS = [v for v in CRUD if v != "deletecollection"]
APPS = "apis/apps/v1"
AUTHZ = "apis/authorization.k8s.io/v1"

#: (group/version path, resource, kind, namespaced, shortNames, categories, verbs, subresources),
#: as kube-apiserver 1.37's /api/v1 and /apis/<group>/<version> list them.
BUILTINS = [
    ("api/v1", "namespaces", "Namespace", False, ["ns"], [], NS_VERBS, ["finalize", "status"]),
    ("api/v1", "pods", "Pod", True, ["po"], ["all"], CRUD, ["status"]),
    ("api/v1", "secrets", "Secret", True, [], [], CRUD, []),
    ("api/v1", "configmaps", "ConfigMap", True, ["cm"], [], CRUD, []),
    ("api/v1", "serviceaccounts", "ServiceAccount", True, ["sa"], [], CRUD, ["token"]),
    ("api/v1", "services", "Service", True, ["svc"], ["all"], CRUD, ["status"]),
    ("api/v1", "endpoints", "Endpoints", True, ["ep"], [], CRUD, []),
    ("api/v1", "nodes", "Node", False, ["no"], [], CRUD, ["status"]),
    ("api/v1", "events", "Event", True, ["ev"], [], CRUD, []),
    ("apis/events.k8s.io/v1", "events", "Event", True, ["ev"], [], CRUD, []),
    ("apis/coordination.k8s.io/v1", "leases", "Lease", True, [], [], CRUD, []),
    (APPS, "deployments", "Deployment", True, ["deploy"], ["all"], CRUD, ["scale", "status"]),
    (APPS, "statefulsets", "StatefulSet", True, ["sts"], ["all"], CRUD, ["scale", "status"]),
    (APPS, "daemonsets", "DaemonSet", True, ["ds"], ["all"], CRUD, ["status"]),
    ("apis/batch/v1", "jobs", "Job", True, [], ["all"], CRUD, ["status"]),
    ("apis/rbac.authorization.k8s.io/v1", "roles", "Role", True, [], [], CRUD, []),
    ("apis/rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True, [], [], CRUD, []),
    ("apis/rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False, [], [], CRUD, []),
    (
        "apis/rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        False,
        [],
        [],
        CRUD,
        [],
    ),
    (
        "apis/apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ["crd", "crds"],
        ["api-extensions"],
        CRUD,
        ["status"],
    ),
    ("apis/authentication.k8s.io/v1", "tokenreviews", "TokenReview", False, [], [], REVIEW, []),
    (AUTHZ, "subjectaccessreviews", "SubjectAccessReview", False, [], [], REVIEW, []),
    (AUTHZ, "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, [], [], REVIEW, []),
    (
        "apis/apiregistration.k8s.io/v1",
        "apiservices",
        "APIService",
        False,
        [],
        ["api-extensions"],
        CRUD,
        ["status"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "resource", "kind", "namespaced", "short", "categories", "verbs", "subresources"),
    BUILTINS,
    ids=[f"{b[0].split('/')[-2]}-{b[1]}" for b in BUILTINS],
)
async def test_builtin_is_discovered_like_kube(
    raw: Raw,
    path: str,
    resource: str,
    kind: str,
    namespaced: bool,
    short: list[str],
    categories: list[str],
    verbs: list[str],
    subresources: list[str],
) -> None:
    listed = await raw.get(f"/{path}")
    assert listed.status == 200
    assert listed.body["groupVersion"] == path.removeprefix("api/").removeprefix("apis/")
    entries = {r["name"]: r for r in listed.body["resources"]}
    entry = entries[resource]
    assert entry["kind"] == kind
    assert entry["namespaced"] is namespaced
    assert entry.get("shortNames", []) == short
    assert entry.get("categories", []) == categories
    assert sorted(entry["verbs"]) == verbs
    # Subresources other helpers add (pods/exec, pods/log...) may be present too.
    served = {name.split("/", 1)[1] for name in entries if name.startswith(f"{resource}/")}
    assert set(subresources) <= served
    # Every entry is reachable: a list (or, for create-only reviews, a 405 on GET).
    base = path if not namespaced else f"{path}/namespaces/default"
    reply = await raw.get(f"/{base}/{resource}")
    if verbs == REVIEW:
        assert reply.status == 405
    else:
        assert reply.status == 200
        assert reply.body["kind"] == f"{kind}List"
