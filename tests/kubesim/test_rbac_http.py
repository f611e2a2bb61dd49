"""RBAC through real HTTP requests: each rule shape allowed and denied at the server.

The unit tests in test_rbac.py check the evaluator; these check that the server derives the same
request attributes kube-apiserver does (verb from method and query, name, subresource, namespace,
non-resource path) and that reviews answer from the same stored objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.types import UserInfo
from tests.kubesim.conftest import Raw, configmap

DAVE = "dave-token"
TEAM = "team-token"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
CM = "/api/v1/namespaces/default/configmaps"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def rule(groups: list[str], resources: list[str], verbs: list[str], **more: Any) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **more}


def role(kind: str, name: str, rules: list[dict[str, Any]], namespace: str = "") -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace} if namespace else {"name": name}
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta} | {
        "rules": rules
    }


def binding(
    kind: str, name: str, role_kind: str, subject: dict[str, str], namespace: str = ""
) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace} if namespace else {"name": name}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": [subject],
    }


DAVE_USER = {"kind": "User", "name": "dave"}


@pytest.fixture
async def admin() -> AsyncIterator[Raw]:
    """dave (a user) and a member of group ``team``, with the roles each test needs."""
    tokens = {
        DAVE: UserInfo(name="dave"),
        TEAM: UserInfo(name="erin", groups=("team",)),
    }
    async with running_kubesim(KubesimConfig(nodes=0, static_tokens=tokens)) as sim:
        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            raw = Raw(session, sim)
            ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}
            assert (await raw.post("/api/v1/namespaces", ns)).status == 201
            for name in ("a", "b"):
                assert (await raw.post(CM, configmap(name))).status == 201
            await raw.post("/api/v1/namespaces/other/configmaps", configmap("a", "other"))
            yield raw


async def grant(
    admin: Raw, kind: str, name: str, rules: list[dict[str, Any]], subject: dict[str, str]
) -> None:
    """A Role+RoleBinding in default, or a ClusterRole+ClusterRoleBinding."""
    if kind == "Role":
        made = [
            (f"{RBAC}/namespaces/default/roles", role("Role", name, rules, "default")),
            (
                f"{RBAC}/namespaces/default/rolebindings",
                binding("RoleBinding", name, "Role", subject, "default"),
            ),
        ]
    else:
        made = [
            (f"{RBAC}/clusterroles", role("ClusterRole", name, rules)),
            (
                f"{RBAC}/clusterrolebindings",
                binding("ClusterRoleBinding", name, "ClusterRole", subject),
            ),
        ]
    for path, body in made:
        reply = await admin.post(path, body)
        assert reply.status == 201, reply.body


async def status(admin: Raw, method: str, path: str, token: str = DAVE, body: Any = None) -> int:
    return (await admin.request(method, path, body, token=token)).status


async def test_resource_names(admin: Raw) -> None:
    await grant(
        admin, "Role", "one", [rule([""], ["configmaps"], ["get"], resourceNames=["a"])], DAVE_USER
    )
    assert await status(admin, "GET", f"{CM}/a") == 200
    assert await status(admin, "GET", f"{CM}/b") == 403
    assert await status(admin, "GET", CM) == 403, "a list has no name"
    assert await status(admin, "GET", "/api/v1/namespaces/other/configmaps/a") == 403


async def test_named_watch_through_field_selector(admin: Raw) -> None:
    """kube names a list/watch by its metadata.name field selector, so resourceNames apply."""
    await grant(
        admin, "Role", "w", [rule([""], ["configmaps"], ["list"], resourceNames=["a"])], DAVE_USER
    )
    assert await status(admin, "GET", f"{CM}?fieldSelector=metadata.name%3Da") == 200
    assert await status(admin, "GET", f"{CM}?fieldSelector=metadata.name%3Db") == 403


async def test_subresources(admin: Raw) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "i:1"}]},
            },
        },
    }
    assert (await admin.post(DEPLOY, deployment)).status == 201
    await grant(
        admin,
        "Role",
        "scaler",
        [rule(["apps"], ["deployments/scale"], ["get", "update"])],
        DAVE_USER,
    )
    assert await status(admin, "GET", f"{DEPLOY}/web/scale") == 200
    assert await status(admin, "GET", f"{DEPLOY}/web") == 403
    assert await status(admin, "GET", f"{DEPLOY}/web/status") == 403
    assert await status(admin, "GET", f"{DEPLOY}") == 403


async def test_verbs_from_method_and_query(admin: Raw) -> None:
    rules = [
        rule([""], ["configmaps"], ["deletecollection", "patch"]),
        rule([""], ["secrets"], ["watch"]),
    ]
    await grant(admin, "Role", "verbs", rules, DAVE_USER)
    patch = {"data": {"x": "y"}}
    reply = await admin.patch(f"{CM}/a", patch, "application/merge-patch+json", token=DAVE)
    assert reply.status == 200
    assert await status(admin, "PUT", f"{CM}/a", body=reply.body) == 403, "update is not patch"
    assert await status(admin, "DELETE", f"{CM}/b") == 403, "delete is not deletecollection"
    assert await status(admin, "DELETE", f"{CM}?labelSelector=none") == 200
    secrets = "/api/v1/namespaces/default/secrets"
    assert await status(admin, "GET", secrets) == 403, "list is not watch"
    async with admin.session.get(
        f"{admin.server.url}{secrets}?watch=1", headers={"Authorization": f"Bearer {DAVE}"}
    ) as stream:
        assert stream.status == 200, "the watch stream opens"


async def test_wildcards_and_cluster_role_in_a_namespace(admin: Raw) -> None:
    await admin.post(
        f"{RBAC}/clusterroles", role("ClusterRole", "apps-all", [rule(["apps"], ["*"], ["*"])])
    )
    await admin.post(
        f"{RBAC}/namespaces/default/rolebindings",
        binding("RoleBinding", "apps-all", "ClusterRole", DAVE_USER, "default"),
    )
    assert await status(admin, "GET", DEPLOY) == 200
    assert await status(admin, "GET", "/apis/apps/v1/namespaces/default/statefulsets") == 200
    assert await status(admin, "GET", "/apis/apps/v1/namespaces/other/deployments") == 403
    assert await status(admin, "GET", "/apis/apps/v1/deployments") == 403, "not cluster-wide"
    assert await status(admin, "GET", CM) == 403, "another group"


async def test_non_resource_urls(admin: Raw) -> None:
    rules = [{"nonResourceURLs": ["/metrics", "/logs/*"], "verbs": ["get"]}]
    await grant(admin, "ClusterRole", "paths", rules, DAVE_USER)
    # Allowed but not served: 404, where a refused request is 403.
    assert await status(admin, "GET", "/metrics") == 404
    assert await status(admin, "GET", "/logs/kube/x") == 404
    assert await status(admin, "GET", "/metrics", token=TEAM) == 403
    assert await status(admin, "GET", "/metricsx") == 403


async def test_group_subject_and_reviews(admin: Raw) -> None:
    await grant(
        admin,
        "ClusterRole",
        "team-read",
        [rule([""], ["configmaps"], ["get", "list"])],
        {"kind": "Group", "name": "team"},
    )
    assert await status(admin, "GET", CM, token=TEAM) == 200
    assert await status(admin, "GET", CM) == 403

    async def review(user: str, groups: list[str], namespace: str) -> dict[str, Any]:
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": groups,
                "resourceAttributes": {
                    "verb": "list",
                    "resource": "configmaps",
                    "namespace": namespace,
                },
            },
        }
        reply = await admin.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", body)
        assert reply.status == 201
        result: dict[str, Any] = reply.body["status"]
        return result

    assert (await review("erin", ["team"], "default"))["allowed"] is True
    assert (await review("erin", [], "default"))["allowed"] is False
    self_review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "verb": "delete",
                "resource": "configmaps",
                "namespace": "default",
            }
        },
    }
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    denied = await admin.post(path, self_review, token=TEAM)
    assert denied.body["status"]["allowed"] is False
    self_review["spec"]["resourceAttributes"]["verb"] = "list"  # type: ignore[index]
    allowed = await admin.post(path, self_review, token=TEAM)
    assert allowed.body["status"]["allowed"] is True
