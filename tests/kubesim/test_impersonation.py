"""Impersonation as kube-apiserver's filter: each kind allowed and denied, with kube's messages."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import pytest

from clusternet_aa.sandbox.kubesim.impersonation import forbidden as forbidden_error
from clusternet_aa.sandbox.kubesim.impersonation import impersonate, split_service_account
from clusternet_aa.sandbox.kubesim.rbac import RBAC_GROUP, RBACAuthorizer
from clusternet_aa.sandbox.kubesim.types import (
    Decision,
    KubesimError,
    Obj,
    RequestAttributes,
    UserInfo,
)

ALICE = UserInfo(name="alice", groups=("system:authenticated",))
EXTRA_KEY = "authentication.kubernetes.io/credential-id"


def client_go_extra_header(key: str) -> str:
    """How client-go escapes an extra key into a header name (kube-protocols.md §2.b)."""
    return "Impersonate-Extra-" + quote(key, safe="!#$&'*+-.^_`|~")


class Objects:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], list[Obj]] = {}

    def add(self, group: str, resource: str, obj: Obj) -> None:
        self.items.setdefault((group, resource), []).append(obj)

    def __call__(self, group: str, resource: str, namespace: str | None) -> Sequence[Obj]:
        return [
            o
            for o in self.items.get((group, resource), [])
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]


def authorizer_with(rules: list[Obj], *, namespace: str | None = None) -> RBACAuthorizer:
    """alice holds ``rules`` cluster-wide, or in ``namespace`` through a RoleBinding."""
    objects = Objects()
    objects.add(RBAC_GROUP, "clusterroles", {"metadata": {"name": "imp"}, "rules": rules})
    binding: Obj = {
        "metadata": {"name": "imp"},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "imp"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    if namespace:
        binding["metadata"]["namespace"] = namespace
        objects.add(RBAC_GROUP, "rolebindings", binding)
    else:
        objects.add(RBAC_GROUP, "clusterrolebindings", binding)
    return RBACAuthorizer(objects)


def rule(group: str, resource: str, names: Sequence[str] = ()) -> Obj:
    out: Obj = {"apiGroups": [group], "resources": [resource], "verbs": ["impersonate"]}
    if names:
        out["resourceNames"] = list(names)
    return out


NOBODY = authorizer_with([])


def forbidden(headers: list[tuple[str, str]], authz: RBACAuthorizer = NOBODY) -> KubesimError:
    with pytest.raises(KubesimError) as info:
        impersonate(ALICE, headers, authz.authorize)
    assert info.value.code == 403
    assert info.value.reason == "Forbidden"
    return info.value


def test_no_headers_keeps_the_requester() -> None:
    calls: list[RequestAttributes] = []

    def deny(attrs: RequestAttributes) -> Decision:
        calls.append(attrs)
        return Decision(False)

    assert impersonate(ALICE, [("Accept", "application/json")], deny) is ALICE
    assert calls == []


def test_user_allowed() -> None:
    authz = authorizer_with([rule("", "users", ["bob"])])
    user = impersonate(ALICE, [("Impersonate-User", "bob")], authz.authorize)
    assert user == UserInfo(name="bob", groups=("system:authenticated",))


def test_user_denied() -> None:
    authz = authorizer_with([rule("", "users", ["bob"])])
    error = forbidden([("Impersonate-User", "carol")], authz)
    assert error.message == (
        'users "carol" is forbidden: User "alice" cannot impersonate resource "users" '
        'in API group "" at the cluster scope'
    )
    assert error.details == {"name": "carol", "kind": "users"}


def test_group_allowed() -> None:
    authz = authorizer_with([rule("", "users"), rule("", "groups")])
    headers = [
        ("impersonate-user", "bob"),
        ("Impersonate-Group", "g1"),
        ("Impersonate-Group", "g2"),
    ]
    user = impersonate(ALICE, headers, authz.authorize)
    assert user.groups == ("g1", "g2", "system:authenticated")


def test_group_denied() -> None:
    authz = authorizer_with([rule("", "users"), rule("", "groups", ["g1"])])
    error = forbidden([("Impersonate-User", "bob"), ("Impersonate-Group", "system:masters")], authz)
    assert error.message == (
        'groups "system:masters" is forbidden: User "alice" cannot impersonate resource '
        '"groups" in API group "" at the cluster scope'
    )


def test_service_account_allowed_in_its_namespace() -> None:
    authz = authorizer_with([rule("", "serviceaccounts")], namespace="ns1")
    user = impersonate(ALICE, [("Impersonate-User", "system:serviceaccount:ns1:robot")], authz)
    assert user == UserInfo(
        name="system:serviceaccount:ns1:robot",
        groups=("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"),
    )


def test_service_account_denied_in_another_namespace() -> None:
    authz = authorizer_with([rule("", "serviceaccounts")], namespace="ns1")
    error = forbidden([("Impersonate-User", "system:serviceaccount:ns2:robot")], authz)
    assert error.message == (
        'serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource '
        '"serviceaccounts" in API group "" in the namespace "ns2"'
    )


def test_service_account_is_not_a_user() -> None:
    authz = authorizer_with([rule("", "users")])
    forbidden([("Impersonate-User", "system:serviceaccount:ns1:robot")], authz)
    # A malformed SA name is a plain user name.
    user = impersonate(ALICE, [("Impersonate-User", "system:serviceaccount:a:b:c")], authz)
    assert user.name == "system:serviceaccount:a:b:c"
    assert split_service_account("system:serviceaccount:Bad_NS:x") is None


def test_service_account_with_explicit_groups_gets_only_those() -> None:
    authz = authorizer_with([rule("", "serviceaccounts"), rule("", "groups")])
    headers = [("Impersonate-User", "system:serviceaccount:ns1:robot"), ("Impersonate-Group", "g")]
    user = impersonate(ALICE, headers, authz)
    assert user.groups == ("g", "system:authenticated")


def test_uid_allowed_and_denied() -> None:
    allowed = authorizer_with([rule("", "users"), rule("authentication.k8s.io", "uids")])
    headers = [("Impersonate-User", "bob"), ("Impersonate-Uid", "1234")]
    assert impersonate(ALICE, headers, allowed).uid == "1234"
    wrong_group = authorizer_with([rule("", "users"), rule("", "uids")])
    error = forbidden(headers, wrong_group)
    assert error.message == (
        'uids.authentication.k8s.io "1234" is forbidden: User "alice" cannot impersonate '
        'resource "uids" in API group "authentication.k8s.io" at the cluster scope'
    )
    assert error.details == {"name": "1234", "group": "authentication.k8s.io", "kind": "uids"}


def test_extra_allowed_with_escaped_key() -> None:
    authz = authorizer_with(
        [rule("", "users"), rule("authentication.k8s.io", f"userextras/{EXTRA_KEY}")]
    )
    header = client_go_extra_header(EXTRA_KEY)
    assert header == "Impersonate-Extra-authentication.kubernetes.io%2Fcredential-id"
    headers = [("Impersonate-User", "bob"), (header, "JTI=a"), (header, "JTI=b")]
    user = impersonate(ALICE, headers, authz)
    assert user.extra == {EXTRA_KEY: ("JTI=a", "JTI=b")}


def test_extra_key_is_lower_cased() -> None:
    authz = authorizer_with([rule("", "users"), rule("authentication.k8s.io", "userextras/scopes")])
    user = impersonate(
        ALICE, [("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "x")], authz
    )
    assert user.extra == {"scopes": ("x",)}


def test_extra_denied_names_the_key_as_subresource() -> None:
    authz = authorizer_with([rule("", "users"), rule("authentication.k8s.io", "userextras/scopes")])
    error = forbidden([("Impersonate-User", "bob"), ("Impersonate-Extra-Project", "p1")], authz)
    assert error.message == (
        'userextras.authentication.k8s.io "p1" is forbidden: User "alice" cannot impersonate '
        'resource "userextras/project" in API group "authentication.k8s.io" at the cluster scope'
    )


def test_userextras_star_slash_key_grants_that_key_on_any_resource() -> None:
    authz = authorizer_with([rule("", "users"), rule("authentication.k8s.io", "*/scopes")])
    user = impersonate(
        ALICE, [("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "x")], authz
    )
    assert user.extra == {"scopes": ("x",)}


@pytest.mark.parametrize(
    ("header", "described"),
    [
        (("Impersonate-Group", "g"), "{Group  g    }"),
        (("Impersonate-Uid", "u"), "{UID  u  authentication.k8s.io/v1  }"),
        (("Impersonate-Extra-K", "v"), "{UserExtra  v  authentication.k8s.io/v1  k}"),
    ],
)
def test_anything_without_a_user_is_a_bad_request(header: tuple[str, str], described: str) -> None:
    with pytest.raises(KubesimError) as info:
        impersonate(ALICE, [header], NOBODY)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    assert info.value.message == f"requested [{described}] without impersonating a user"


def test_first_refusal_wins_and_checks_stop() -> None:
    calls: list[str] = []

    def authz(attrs: RequestAttributes) -> Decision:
        calls.append(attrs.resource)
        return Decision(attrs.resource != "groups", "no groups for you")

    with pytest.raises(KubesimError) as info:
        impersonate(
            ALICE,
            [("Impersonate-User", "bob"), ("Impersonate-Group", "g"), ("Impersonate-Uid", "u")],
            authz,
        )
    assert calls == ["users", "groups"]
    assert info.value.message.endswith("at the cluster scope: no groups for you")


def test_impersonating_anonymous_is_unauthenticated() -> None:
    authz = authorizer_with([rule("", "users")])
    user = impersonate(ALICE, [("Impersonate-User", "system:anonymous")], authz)
    assert user.groups == ("system:unauthenticated",)


def test_explicit_authenticated_group_is_not_duplicated() -> None:
    authz = authorizer_with([rule("", "users"), rule("", "groups")])
    headers = [("Impersonate-User", "bob"), ("Impersonate-Group", "system:authenticated")]
    assert impersonate(ALICE, headers, authz).groups == ("system:authenticated",)
    unauth = [("Impersonate-User", "bob"), ("Impersonate-Group", "system:unauthenticated")]
    assert impersonate(ALICE, unauth, authz).groups == ("system:unauthenticated",)


def test_system_masters_may_impersonate_anyone() -> None:
    admin = UserInfo(name="root", groups=("system:masters",))
    headers = [
        ("Impersonate-User", "bob"),
        ("Impersonate-Group", "g"),
        ("Impersonate-Uid", "u"),
        ("Impersonate-Extra-Scopes", "s"),
    ]
    user = impersonate(admin, headers, NOBODY)
    assert user == UserInfo(
        name="bob", uid="u", groups=("g", "system:authenticated"), extra={"scopes": ("s",)}
    )


def test_malformed_extra_key_escape_is_kept_verbatim() -> None:
    admin = UserInfo(name="root", groups=("system:masters",))
    headers = [("Impersonate-User", "bob"), ("Impersonate-Extra-a%zzb", "v")]
    assert impersonate(admin, headers, NOBODY).extra == {"a%zzb": ("v",)}
    spaced = [("Impersonate-User", "bob"), ("Impersonate-Extra-My%20Key", "v")]
    assert impersonate(admin, spaced, NOBODY).extra == {"my key": ("v",)}


def test_forbidden_wording_for_paths_and_unnamed_resources() -> None:
    path = RequestAttributes(user=ALICE, verb="get", is_resource_request=False, path="/apis")
    assert forbidden_error(path, "").message == 'forbidden: User "alice" cannot get path "/apis"'
    listing = RequestAttributes(
        user=ALICE, verb="list", is_resource_request=True, resource="pods", namespace="ns1"
    )
    assert forbidden_error(listing, "").message == (
        'pods is forbidden: User "alice" cannot list resource "pods" in API group "" '
        'in the namespace "ns1"'
    )
