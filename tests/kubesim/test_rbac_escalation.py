"""RBAC escalation prevention, compared with kube-apiserver's policybased RBAC storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from clusternet_aa.sandbox.kubesim.rbac_escalation import Atom, breakdown, covers, uncovered
from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.types import UserInfo
from tests.kubesim.conftest import Kubectl, Raw

DAVE = "dave-token"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
ROLES = f"{RBAC}/namespaces/default/roles"
MANAGE = ["create", "get", "list", "update", "patch", "delete"]
BINDINGS = f"{RBAC}/namespaces/default/rolebindings"


def rule(groups: list[str], resources: list[str], verbs: list[str], **more: Any) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **more}


# -- coverage, as kube's validation.Covers ---------------------------------------------------


def test_breakdown_is_one_atom_per_verb_resource_and_name() -> None:
    atoms = breakdown(rule(["", "apps"], ["pods"], ["get", "list"], resourceNames=["a"]))
    assert len(atoms) == 4
    assert Atom(verb="list", group="apps", resource="pods", name="a") in atoms
    urls = breakdown({"nonResourceURLs": ["/a", "/b/*"], "verbs": ["get"]})
    assert urls == [Atom(verb="get", url="/a"), Atom(verb="get", url="/b/*")]


@pytest.mark.parametrize(
    ("owner", "atom", "expected"),
    [
        (rule([""], ["pods"], ["get"]), Atom("get", "", "pods"), True),
        (rule([""], ["pods"], ["get"]), Atom("list", "", "pods"), False),
        (rule(["*"], ["*"], ["*"]), Atom("delete", "apps", "deployments/scale"), True),
        # A wildcard asked for is covered by a wildcard only.
        (rule([""], ["pods"], ["get"]), Atom("get", "", "*"), False),
        (rule([""], ["pods", "secrets"], ["*"]), Atom("*", "", "pods"), True),
        (rule([""], ["pods"], ["get", "list"]), Atom("*", "", "pods"), False),
        # Subresources: exact, or */sub.
        (rule(["apps"], ["*/scale"], ["get"]), Atom("get", "apps", "deployments/scale"), True),
        (rule(["apps"], ["deployments"], ["get"]), Atom("get", "apps", "deployments/scale"), False),
        # Names: an owner limited to names covers only those names, never "all names".
        (rule([""], ["cm"], ["get"], resourceNames=["a"]), Atom("get", "", "cm", "a"), True),
        (rule([""], ["cm"], ["get"], resourceNames=["a"]), Atom("get", "", "cm", "b"), False),
        (rule([""], ["cm"], ["get"], resourceNames=["a"]), Atom("get", "", "cm"), False),
        (rule([""], ["cm"], ["get"]), Atom("get", "", "cm", "b"), True),
        ({"nonResourceURLs": ["/logs/*"], "verbs": ["get"]}, Atom("get", url="/logs/x"), True),
        ({"nonResourceURLs": ["/logs/*"], "verbs": ["get"]}, Atom("get", url="/logs/*"), True),
        ({"nonResourceURLs": ["/logs"], "verbs": ["get"]}, Atom("get", url="/logs/x"), False),
        (rule(["*"], ["*"], ["*"]), Atom("get", url="/healthz"), False),
        ({"nonResourceURLs": ["*"], "verbs": ["*"]}, Atom("get", "", "pods"), False),
    ],
)
def test_rule_covers(owner: dict[str, Any], atom: Atom, expected: bool) -> None:
    assert covers(owner, atom) is expected


def test_uncovered_lists_each_missing_atom_once() -> None:
    owner = [rule([""], ["pods"], ["get", "list"])]
    asked = [rule([""], ["pods", "secrets"], ["get", "list"]), rule([""], ["secrets"], ["get"])]
    assert uncovered(owner, asked) == [Atom("get", "", "secrets"), Atom("list", "", "secrets")]


# -- through the server ----------------------------------------------------------------------


@pytest.fixture
async def admin() -> AsyncIterator[Raw]:
    """dave may manage Roles and RoleBindings in default and read ConfigMaps there."""
    config = KubesimConfig(nodes=0, static_tokens={DAVE: UserInfo(name="dave")})
    async with running_kubesim(config) as sim:
        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            raw = Raw(session, sim)
            rules = [
                # Not "*": that would include escalate and bind, as in kube.
                rule(["rbac.authorization.k8s.io"], ["roles", "rolebindings"], MANAGE),
                rule([""], ["configmaps"], ["get", "list"]),
            ]
            await grant_dave(raw, "manager", rules)
            yield raw


async def grant_dave(admin: Raw, name: str, rules: list[dict[str, Any]]) -> None:
    role = role_body(name, rules)
    assert (await admin.post(ROLES, role)).status == 201
    binding = binding_body(name, "Role", name)
    assert (await admin.post(BINDINGS, binding)).status == 201


def role_body(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": "default"},
        "rules": rules,
    }


def binding_body(name: str, role_kind: str, role_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name},
        "subjects": [{"kind": "User", "name": "dave"}],
    }


async def test_role_within_own_permissions(admin: Raw) -> None:
    ok = await admin.post(
        ROLES, role_body("reader", [rule([""], ["configmaps"], ["get"])]), token=DAVE
    )
    assert ok.status == 201


async def test_role_beyond_own_permissions_is_forbidden(admin: Raw) -> None:
    asked = [rule([""], ["configmaps", "secrets"], ["get", "list", "watch"])]
    refused = await admin.post(ROLES, role_body("greedy", asked), token=DAVE)
    assert refused.status == 403
    assert refused.body["reason"] == "Forbidden"
    assert refused.body["message"] == (
        'roles.rbac.authorization.k8s.io "greedy" is forbidden: user "dave" '
        '(groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently '
        'held:\n{APIGroups:[""], Resources:["configmaps"], Verbs:["watch"]}\n'
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list" "watch"]}'
    )
    assert (await admin.get(f"{ROLES}/greedy")).status == 404, "nothing was written"


async def test_escalate_verb_allows_it(admin: Raw) -> None:
    await grant_dave(
        admin, "escalator", [rule(["rbac.authorization.k8s.io"], ["roles"], ["escalate"])]
    )
    asked = [rule([""], ["secrets"], ["get"])]
    assert (await admin.post(ROLES, role_body("greedy", asked), token=DAVE)).status == 201


async def test_updates_are_checked_but_gc_fields_are_not(admin: Raw) -> None:
    made = await admin.post(ROLES, role_body("held", [rule([""], ["secrets"], ["get"])]))
    obj = made.body
    obj["metadata"]["labels"] = {"touched": "yes"}
    relabel = await admin.put(f"{ROLES}/held", obj, token=DAVE)
    assert relabel.status == 403, "kube checks the whole role on any update"
    del obj["metadata"]["labels"]
    obj["metadata"]["finalizers"] = ["example.com/keep"]
    assert (await admin.put(f"{ROLES}/held", obj, token=DAVE)).status == 200


async def test_bindings_need_the_permissions_or_bind(admin: Raw) -> None:
    await admin.post(ROLES, role_body("secrets", [rule([""], ["secrets"], ["get"])]))
    refused = await admin.post(BINDINGS, binding_body("b1", "Role", "secrets"), token=DAVE)
    assert refused.status == 403
    assert refused.body["message"].startswith(
        'rolebindings.rbac.authorization.k8s.io "b1" is forbidden: user "dave"'
    )
    readers = role_body("readers", [rule([""], ["configmaps"], ["list"])])
    await admin.post(ROLES, readers)
    allowed = await admin.post(BINDINGS, binding_body("b2", "Role", "readers"), token=DAVE)
    assert allowed.status == 201
    missing = await admin.post(BINDINGS, binding_body("b3", "Role", "ghost"), token=DAVE)
    assert missing.status == 404
    assert missing.body["message"] == 'roles.rbac.authorization.k8s.io "ghost" not found'
    bind = rule(["rbac.authorization.k8s.io"], ["roles"], ["bind"], resourceNames=["secrets"])
    await grant_dave(admin, "binder", [bind])
    bound = await admin.post(BINDINGS, binding_body("b4", "Role", "secrets"), token=DAVE)
    assert bound.status == 201


async def test_role_ref_is_immutable(admin: Raw) -> None:
    await admin.post(ROLES, role_body("other", []))
    made = (await admin.post(BINDINGS, binding_body("fixed", "Role", "manager"))).body
    made["roleRef"]["name"] = "other"
    changed = await admin.put(f"{BINDINGS}/fixed", made)
    assert changed.status == 422
    assert changed.body["message"] == (
        'RoleBinding.rbac.authorization.k8s.io "fixed" is invalid: roleRef: Invalid value: '
        'rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"other"}: '
        "cannot change roleRef"
    )


async def test_cluster_roles_and_aggregation(raw: Raw) -> None:
    """Only cluster-wide rules count for ClusterRoles; aggregationRule needs full authority.

    The admin acts as erin through impersonation.
    """
    crb = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "cr-manager"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "crm"},
        "subjects": [{"kind": "User", "name": "erin"}],
    }
    manager = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "crm"},
        "rules": [
            rule(["rbac.authorization.k8s.io"], ["clusterroles"], ["create"]),
            rule([""], ["pods"], ["get"]),
        ],
    }
    assert (await raw.post(f"{RBAC}/clusterroles", manager)).status == 201
    assert (await raw.post(f"{RBAC}/clusterrolebindings", crb)).status == 201
    erin = {"Impersonate-User": "erin"}
    small = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "small"},
        "rules": [rule([""], ["pods"], ["get"])],
    }
    assert (await raw.post(f"{RBAC}/clusterroles", small, headers=erin)).status == 201
    big = dict(small, metadata={"name": "big"}, rules=[rule([""], ["*"], ["get"])])
    assert (await raw.post(f"{RBAC}/clusterroles", big, headers=erin)).status == 403
    aggregating = dict(
        small,
        metadata={"name": "agg"},
        rules=[],
        aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]},
    )
    refused = await raw.post(f"{RBAC}/clusterroles", aggregating, headers=erin)
    assert refused.status == 403
    assert refused.body["message"] == (
        'clusterroles.rbac.authorization.k8s.io "agg" is forbidden: must have cluster-admin '
        "privileges to use the aggregationRule"
    )
    assert (await raw.post(f"{RBAC}/clusterroles", aggregating)).status == 201, "masters may"


async def test_kubectl_create_role_as_a_user_without_the_rights(kubectl: Kubectl) -> None:
    await kubectl.run(
        "create", "role", "manager", "--verb=create", "--resource=roles.rbac.authorization.k8s.io"
    )
    await kubectl.run("create", "rolebinding", "manager", "--role=manager", "--user=dave")
    refused = await kubectl.run(
        "create", "role", "sneaky", "--verb=get", "--resource=secrets", "--as=dave", check=False
    )
    assert refused.returncode == 1
    assert "is attempting to grant RBAC permissions not currently held" in refused.stderr
    assert '{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}' in refused.stderr
