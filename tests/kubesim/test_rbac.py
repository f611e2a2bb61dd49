"""RBAC as kube evaluates it: every rule shape allowed and denied, bindings, aggregation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from clusternet_aa.sandbox.kubesim.rbac import (
    RBAC_GROUP,
    NonResourceRule,
    RBACAuthorizer,
    ResourceRule,
    aggregate_cluster_roles,
    bootstrap_policy,
)
from clusternet_aa.sandbox.kubesim.types import Decision, Obj, RequestAttributes, UserInfo

ALICE = UserInfo(name="alice", groups=("devs", "system:authenticated"))


class Objects:
    """An in-memory ObjectLister."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], list[Obj]] = {}

    def add(self, group: str, resource: str, obj: Obj) -> Obj:
        self.items.setdefault((group, resource), []).append(obj)
        return obj

    def __call__(self, group: str, resource: str, namespace: str | None) -> Sequence[Obj]:
        return [
            o
            for o in self.items.get((group, resource), [])
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]


def cluster_role(
    objects: Objects,
    name: str,
    rules: list[Obj],
    labels: dict[str, str] | None = None,
    aggregation: list[Obj] | None = None,
) -> None:
    obj: Obj = {"metadata": {"name": name, "labels": labels or {}}, "rules": rules}
    if aggregation is not None:
        obj["aggregationRule"] = {"clusterRoleSelectors": aggregation}
    objects.add(RBAC_GROUP, "clusterroles", obj)


def role(objects: Objects, namespace: str, name: str, rules: list[Obj]) -> None:
    objects.add(
        RBAC_GROUP, "roles", {"metadata": {"name": name, "namespace": namespace}, "rules": rules}
    )


def subject(kind: str, name: str, namespace: str | None = None) -> Obj:
    out: Obj = {"kind": kind, "name": name}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def bind(
    objects: Objects,
    role_kind: str,
    role_name: str,
    subjects: list[Obj],
    *,
    namespace: str | None = None,
    name: str = "b",
) -> None:
    meta: Obj = {"name": name}
    resource = "clusterrolebindings"
    if namespace is not None:
        meta["namespace"] = namespace
        resource = "rolebindings"
    objects.add(
        RBAC_GROUP,
        resource,
        {
            "metadata": meta,
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role_name},
            "subjects": subjects,
        },
    )


def req(
    verb: str,
    resource: str,
    *,
    user: UserInfo = ALICE,
    group: str = "",
    namespace: str = "",
    name: str = "",
    subresource: str = "",
) -> RequestAttributes:
    return RequestAttributes(
        user=user,
        verb=verb,
        is_resource_request=True,
        api_group=group,
        api_version="v1",
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def path(verb: str, url: str, user: UserInfo = ALICE) -> RequestAttributes:
    return RequestAttributes(user=user, verb=verb, is_resource_request=False, path=url)


def granted(rule: dict[str, Any]) -> RBACAuthorizer:
    """An authorizer where alice holds exactly ``rule`` through a ClusterRoleBinding."""
    objects = Objects()
    cluster_role(objects, "r", [rule])
    bind(objects, "ClusterRole", "r", [subject("User", "alice")])
    return RBACAuthorizer(objects)


def test_verb() -> None:
    authz = granted({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    assert authz.authorize(req("get", "pods", namespace="ns")).allowed
    assert not authz.authorize(req("list", "pods", namespace="ns")).allowed


def test_api_group() -> None:
    authz = granted({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]})
    assert authz.authorize(req("get", "deployments", group="apps")).allowed
    assert not authz.authorize(req("get", "deployments", group="")).allowed
    assert not authz.authorize(req("get", "deployments", group="extensions")).allowed


def test_resource() -> None:
    authz = granted({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    assert authz.authorize(req("get", "pods")).allowed
    assert not authz.authorize(req("get", "secrets")).allowed


def test_subresource_is_separate_from_its_resource() -> None:
    authz = granted({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]})
    assert authz.authorize(req("get", "pods", subresource="log")).allowed
    assert not authz.authorize(req("get", "pods")).allowed
    assert not authz.authorize(req("get", "pods", subresource="exec")).allowed
    only_pods = granted({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    assert not only_pods.authorize(req("get", "pods", subresource="log")).allowed


def test_star_slash_subresource() -> None:
    authz = granted({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]})
    assert authz.authorize(req("update", "deployments", group="apps", subresource="scale")).allowed
    assert not authz.authorize(req("update", "deployments", group="apps")).allowed
    assert not authz.authorize(
        req("update", "deployments", group="apps", subresource="status")
    ).allowed


def test_resource_slash_star_is_not_a_wildcard_in_kube() -> None:
    authz = granted({"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]})
    assert not authz.authorize(req("get", "pods", subresource="log")).allowed
    assert not authz.authorize(req("get", "pods")).allowed


def test_resource_names() -> None:
    authz = granted(
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["*"]}
    )
    assert authz.authorize(req("get", "configmaps", name="a")).allowed
    assert not authz.authorize(req("get", "configmaps", name="b")).allowed
    # list and create carry no name, so resourceNames never grants them.
    assert not authz.authorize(req("list", "configmaps")).allowed


def test_non_resource_urls() -> None:
    authz = granted({"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]})
    assert authz.authorize(path("get", "/healthz")).allowed
    assert not authz.authorize(path("get", "/healthz/ready")).allowed
    assert authz.authorize(path("get", "/logs/kube.log")).allowed
    assert not authz.authorize(path("get", "/logs")).allowed
    assert not authz.authorize(path("post", "/healthz")).allowed
    # A non-resource rule never grants a resource request.
    assert not authz.authorize(req("get", "healthz")).allowed


def test_wildcards() -> None:
    authz = granted({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})
    assert authz.authorize(req("delete", "widgets", group="example.com", namespace="x")).allowed
    assert authz.authorize(req("get", "pods", subresource="log")).allowed
    assert not authz.authorize(path("get", "/version")).allowed
    urls = granted({"nonResourceURLs": ["*"], "verbs": ["get"]})
    assert urls.authorize(path("get", "/anything/at/all")).allowed
    assert not urls.authorize(req("get", "pods")).allowed


def test_role_through_role_binding_is_namespaced() -> None:
    objects = Objects()
    role(objects, "ns1", "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    bind(objects, "Role", "reader", [subject("User", "alice")], namespace="ns1")
    authz = RBACAuthorizer(objects)
    assert authz.authorize(req("get", "pods", namespace="ns1")).allowed
    assert not authz.authorize(req("get", "pods", namespace="ns2")).allowed
    assert not authz.authorize(req("get", "pods")).allowed


def test_role_binding_cannot_reach_a_role_of_another_namespace() -> None:
    objects = Objects()
    role(objects, "ns2", "reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    bind(objects, "Role", "reader", [subject("User", "alice")], namespace="ns1")
    decision = RBACAuthorizer(objects).authorize(req("get", "pods", namespace="ns1"))
    assert decision == Decision(False, 'RBAC: role.rbac.authorization.k8s.io "reader" not found')


def test_cluster_role_through_role_binding_is_limited_to_the_namespace() -> None:
    objects = Objects()
    cluster_role(objects, "view", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    bind(objects, "ClusterRole", "view", [subject("User", "alice")], namespace="ns1", name="rb")
    authz = RBACAuthorizer(objects)
    decision = authz.authorize(req("list", "pods", namespace="ns1"))
    assert decision.allowed
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "rb/ns1" of ClusterRole "view" to User "alice"'
    )
    assert not authz.authorize(req("list", "pods", namespace="ns2")).allowed
    assert not authz.authorize(req("list", "pods")).allowed


def test_cluster_role_binding_is_everywhere() -> None:
    objects = Objects()
    cluster_role(objects, "view", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    bind(objects, "ClusterRole", "view", [subject("User", "alice")], name="crb")
    authz = RBACAuthorizer(objects)
    assert authz.authorize(req("list", "pods")).allowed
    decision = authz.authorize(req("list", "pods", namespace="any"))
    assert decision.reason == (
        'RBAC: allowed by ClusterRoleBinding "crb" of ClusterRole "view" to User "alice"'
    )
    assert not authz.authorize(req("list", "pods", user=UserInfo(name="bob"))).allowed


def test_group_subject() -> None:
    objects = Objects()
    cluster_role(objects, "r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    bind(objects, "ClusterRole", "r", [subject("Group", "devs")])
    authz = RBACAuthorizer(objects)
    assert authz.authorize(req("get", "pods", user=UserInfo(name="x", groups=("devs",)))).allowed
    assert not authz.authorize(req("get", "pods", user=UserInfo(name="devs"))).allowed


def test_service_account_subject_defaults_to_the_binding_namespace() -> None:
    objects = Objects()
    cluster_role(objects, "r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    bind(objects, "ClusterRole", "r", [subject("ServiceAccount", "robot")], namespace="ns1")
    authz = RBACAuthorizer(objects)
    robot = UserInfo(name="system:serviceaccount:ns1:robot")
    other = UserInfo(name="system:serviceaccount:ns2:robot")
    decision = authz.authorize(req("get", "pods", user=robot, namespace="ns1"))
    assert decision.allowed
    assert decision.reason.endswith('to ServiceAccount "robot/ns1"')
    assert not authz.authorize(req("get", "pods", user=other, namespace="ns1")).allowed


def test_service_account_subject_in_a_cluster_binding_needs_a_namespace() -> None:
    objects = Objects()
    cluster_role(objects, "r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    bind(objects, "ClusterRole", "r", [subject("ServiceAccount", "robot")], name="no-ns")
    bind(objects, "ClusterRole", "r", [subject("ServiceAccount", "bot", "ns2")], name="with-ns")
    authz = RBACAuthorizer(objects)
    robot = UserInfo(name="system:serviceaccount:ns1:robot")
    bot = UserInfo(name="system:serviceaccount:ns2:bot")
    assert not authz.authorize(req("get", "pods", user=robot, namespace="ns1")).allowed
    assert authz.authorize(req("get", "pods", user=bot, namespace="ns1")).allowed


def test_aggregated_cluster_role() -> None:
    objects = Objects()
    cluster_role(
        objects,
        "monitoring",
        [],
        aggregation=[{"matchLabels": {"aggregate-to-monitoring": "true"}}],
    )
    cluster_role(
        objects,
        "pods-reader",
        [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        labels={"aggregate-to-monitoring": "true"},
    )
    cluster_role(
        objects,
        "secrets-reader",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        labels={"aggregate-to-monitoring": "false"},
    )
    bind(objects, "ClusterRole", "monitoring", [subject("User", "alice")])
    authz = RBACAuthorizer(objects)
    assert authz.authorize(req("get", "pods")).allowed
    assert not authz.authorize(req("get", "secrets")).allowed


def test_aggregate_cluster_roles_dedups_in_name_order_and_nests() -> None:
    pods = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
    nodes = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    roles: list[Obj] = [
        {
            "metadata": {"name": "top"},
            "aggregationRule": {
                "clusterRoleSelectors": [
                    {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}
                ]
            },
        },
        {
            "metadata": {"name": "mid", "labels": {"tier": "a"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"tier": "b"}}]},
            "rules": [],
        },
        {"metadata": {"name": "z-leaf", "labels": {"tier": "a"}}, "rules": [pods]},
        {"metadata": {"name": "b-leaf", "labels": {"tier": "b"}}, "rules": [nodes, pods]},
        {"metadata": {"name": "c-leaf", "labels": {"tier": "a"}}, "rules": [pods]},
    ]
    result = aggregate_cluster_roles(roles)
    assert result == {"top": [pods, nodes], "mid": [nodes, pods]}


def test_system_masters_may_do_anything() -> None:
    authz = RBACAuthorizer(Objects())
    admin = UserInfo(name="root", groups=("system:masters",))
    assert authz.authorize(req("delete", "nodes", user=admin)) == Decision(True, "")
    assert authz.authorize(path("post", "/anything", user=admin)).allowed
    assert not authz.authorize(req("delete", "nodes")).allowed


def test_denial_without_errors_has_no_reason() -> None:
    assert RBACAuthorizer(Objects()).authorize(req("get", "pods")) == Decision(False, "")


def test_missing_cluster_role_is_reported() -> None:
    objects = Objects()
    bind(objects, "ClusterRole", "gone", [subject("User", "alice")])
    bind(objects, "ClusterRole", "gone", [subject("User", "alice")], name="b2")
    decision = RBACAuthorizer(objects).authorize(req("get", "pods"))
    assert decision == Decision(
        False, 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
    )


def test_role_binding_does_not_grant_non_resource_urls() -> None:
    objects = Objects()
    cluster_role(objects, "r", [{"nonResourceURLs": ["*"], "verbs": ["get"]}])
    bind(objects, "ClusterRole", "r", [subject("User", "alice")], namespace="ns1")
    assert not RBACAuthorizer(objects).authorize(path("get", "/version")).allowed


def test_rules_for() -> None:
    objects = Objects()
    cluster_role(
        objects,
        "r",
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["p"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ],
    )
    role(objects, "ns1", "w", [{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}])
    bind(objects, "ClusterRole", "r", [subject("Group", "devs")])
    bind(objects, "Role", "w", [subject("User", "alice")], namespace="ns1")
    authz = RBACAuthorizer(objects)
    resource_rules, non_resource_rules = authz.rules_for(ALICE, "ns1")
    assert resource_rules == [
        ResourceRule(verbs=("get",), api_groups=("",), resources=("pods",), resource_names=("p",)),
        ResourceRule(verbs=("*",), api_groups=("apps",), resources=("*",), resource_names=()),
    ]
    assert non_resource_rules == [NonResourceRule(verbs=("get",), non_resource_urls=("/healthz",))]
    assert len(authz.rules_for(ALICE, "ns2")[0]) == 1


@pytest.fixture
def defaults() -> RBACAuthorizer:
    objects = Objects()
    for obj in bootstrap_policy():
        resource = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
        objects.add(RBAC_GROUP, resource, obj)
    return RBACAuthorizer(objects)


def test_bootstrap_policy_lets_users_ask_what_they_can_do(defaults: RBACAuthorizer) -> None:
    ssar = req("create", "selfsubjectaccessreviews", group="authorization.k8s.io")
    assert defaults.authorize(ssar).allowed
    assert defaults.authorize(path("get", "/apis/apps/v1")).allowed
    assert not defaults.authorize(req("list", "pods")).allowed
    anonymous = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
    assert defaults.authorize(path("get", "/version", user=anonymous)).allowed
    assert not defaults.authorize(path("get", "/apis", user=anonymous)).allowed


def test_bootstrap_cluster_admin_is_listed_for_masters(defaults: RBACAuthorizer) -> None:
    admin = UserInfo(name="root", groups=("system:masters", "system:authenticated"))
    resource_rules, _ = defaults.rules_for(admin, "default")
    assert ResourceRule(("*",), ("*",), ("*",), ()) in resource_rules


@pytest.mark.parametrize(
    ("expression", "selected"),
    [
        ({"key": "tier", "operator": "NotIn", "values": ["b"]}, ["a-role", "none-role"]),
        ({"key": "tier", "operator": "Exists"}, ["a-role", "b-role"]),
        ({"key": "tier", "operator": "DoesNotExist"}, ["none-role"]),
        ({"key": "tier", "operator": "Bogus"}, []),
    ],
)
def test_aggregation_selector_operators(expression: Obj, selected: list[str]) -> None:
    def leaf(name: str, labels: dict[str, str]) -> Obj:
        return {"metadata": {"name": name, "labels": labels}, "rules": [{"verbs": [name]}]}

    roles: list[Obj] = [
        {
            "metadata": {"name": "agg"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [expression]}]},
        },
        leaf("a-role", {"tier": "a"}),
        leaf("b-role", {"tier": "b"}),
        leaf("none-role", {}),
    ]
    assert aggregate_cluster_roles(roles)["agg"] == [{"verbs": [name]} for name in selected]
