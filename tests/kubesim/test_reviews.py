"""TokenReview and the access reviews, answered from kubesim's authn and RBAC as kube answers."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from clusternet_aa.sandbox.kubesim.authn import Authenticator
from clusternet_aa.sandbox.kubesim.impersonation import impersonate
from clusternet_aa.sandbox.kubesim.rbac import RBAC_GROUP, RBACAuthorizer, bootstrap_policy
from clusternet_aa.sandbox.kubesim.reviews import (
    review_local_subject_access,
    review_self_subject,
    review_self_subject_access,
    review_self_subject_rules,
    review_subject_access,
    review_token,
)
from clusternet_aa.sandbox.kubesim.tokens import TokenSigner, issue_token_request
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, UserInfo

SA: Obj = {"metadata": {"name": "robot", "namespace": "ns1", "uid": "u1"}}
ALICE = UserInfo(name="alice", groups=("system:authenticated",))


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


@pytest.fixture
def objects() -> Objects:
    objects = Objects()
    objects.add("", "serviceaccounts", SA)
    for obj in bootstrap_policy():
        resource = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
        objects.add(RBAC_GROUP, resource, obj)
    objects.add(
        RBAC_GROUP,
        "roles",
        {
            "metadata": {"name": "pod-reader", "namespace": "ns1"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        },
    )
    objects.add(
        RBAC_GROUP,
        "rolebindings",
        {
            "metadata": {"name": "alice-reads", "namespace": "ns1"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "User", "name": "alice"}],
        },
    )
    return objects


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner()


@pytest.fixture
def authn(objects: Objects, signer: TokenSigner) -> Authenticator:
    return Authenticator(lister=objects, signer=signer, static_tokens={}, allow_anonymous=True)


@pytest.fixture
def authz(objects: Objects) -> RBACAuthorizer:
    return RBACAuthorizer(objects)


def token_review(token: str, audiences: list[str] | None = None) -> Obj:
    spec: Obj = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}


def test_token_review_authenticated(authn: Authenticator, signer: TokenSigner) -> None:
    token = issue_token_request(SA, {}, signer=signer)["status"]["token"]
    out = review_token(token_review(token), authn)
    status = out["status"]
    assert status["authenticated"] is True
    assert status["audiences"] == list(signer.api_audiences)
    assert status["user"]["username"] == "system:serviceaccount:ns1:robot"
    assert status["user"]["uid"] == "u1"
    assert status["user"]["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:ns1",
        "system:authenticated",
    ]
    assert list(status["user"]["extra"]) == ["authentication.kubernetes.io/credential-id"]
    assert out["spec"]["token"] == token


def test_token_review_not_authenticated(authn: Authenticator) -> None:
    status = review_token(token_review("bogus"), authn)["status"]
    assert status == {"authenticated": False, "user": {}, "error": "invalid bearer token"}


def test_token_review_audiences(authn: Authenticator, signer: TokenSigner) -> None:
    token = issue_token_request(SA, {"spec": {"audiences": ["hub"]}}, signer=signer)["status"]
    assert review_token(token_review(token["token"], ["hub"]), authn)["status"]["audiences"] == [
        "hub"
    ]
    status = review_token(token_review(token["token"]), authn)["status"]
    assert status["authenticated"] is False
    assert "is invalid for the target audiences" in status["error"]


def test_token_review_bad_requests(authn: Authenticator) -> None:
    with pytest.raises(KubesimError) as info:
        review_token({"kind": "TokenReview", "spec": {}}, authn)
    assert (info.value.code, info.value.message) == (
        400,
        "token is required for TokenReview in authentication",
    )
    with pytest.raises(KubesimError) as info:
        review_token(token_review("x"), authn, namespace="ns1")
    assert info.value.code == 400
    with pytest.raises(KubesimError):
        review_token({"kind": "SubjectAccessReview", "spec": {"token": "x"}}, authn)


def sar(spec: Obj) -> Obj:
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def test_subject_access_review_allowed(authz: RBACAuthorizer) -> None:
    attrs = {"namespace": "ns1", "verb": "list", "resource": "pods", "version": "v1"}
    out = review_subject_access(sar({"user": "alice", "resourceAttributes": attrs}), authz)
    assert out["status"] == {
        "allowed": True,
        "reason": 'RBAC: allowed by RoleBinding "alice-reads/ns1" of Role "pod-reader" to User '
        '"alice"',
    }


def test_subject_access_review_denied(authz: RBACAuthorizer) -> None:
    attrs = {"namespace": "ns2", "verb": "list", "resource": "pods"}
    out = review_subject_access(sar({"user": "alice", "resourceAttributes": attrs}), authz)
    assert out["status"] == {"allowed": False}
    delete = {"namespace": "ns1", "verb": "delete", "resource": "pods", "name": "p"}
    assert not review_subject_access(sar({"user": "alice", "resourceAttributes": delete}), authz)[
        "status"
    ]["allowed"]


def test_subject_access_review_takes_groups_as_given(authz: RBACAuthorizer) -> None:
    ssar = {
        "group": "authorization.k8s.io",
        "verb": "create",
        "resource": "selfsubjectaccessreviews",
    }
    without = review_subject_access(sar({"user": "bob", "resourceAttributes": ssar}), authz)
    assert without["status"]["allowed"] is False
    spec = {"user": "bob", "groups": ["system:authenticated"], "resourceAttributes": ssar}
    assert review_subject_access(sar(spec), authz)["status"]["allowed"] is True
    masters = {"groups": ["system:masters"], "resourceAttributes": {"verb": "*", "resource": "*"}}
    assert review_subject_access(sar(masters), authz)["status"] == {"allowed": True}


def test_subject_access_review_non_resource(authz: RBACAuthorizer) -> None:
    spec = {"user": "x", "groups": ["system:unauthenticated"]}
    healthz = {**spec, "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}
    assert review_subject_access(sar(healthz), authz)["status"]["allowed"] is True
    apis = {**spec, "nonResourceAttributes": {"path": "/apis", "verb": "get"}}
    assert review_subject_access(sar(apis), authz)["status"]["allowed"] is False


def test_subject_access_review_validation(authz: RBACAuthorizer) -> None:
    with pytest.raises(KubesimError) as info:
        review_subject_access(sar({"resourceAttributes": {"verb": "get"}}), authz)
    assert info.value.code == 422
    assert info.value.reason == "Invalid"
    assert info.value.message == (
        'SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": '
        "at least one of user or group must be specified"
    )
    with pytest.raises(KubesimError) as info:
        review_subject_access(sar({"user": "a"}), authz)
    assert "exactly one of nonResourceAttributes or resourceAttributes" in info.value.message
    both = {"user": "a", "resourceAttributes": {}, "nonResourceAttributes": {}}
    with pytest.raises(KubesimError) as info:
        review_subject_access(sar(both), authz)
    assert "cannot be specified in combination with resourceAttributes" in info.value.message
    named = {**sar({"user": "a", "resourceAttributes": {}}), "metadata": {"name": "x"}}
    with pytest.raises(KubesimError) as info:
        review_subject_access(named, authz)
    assert "metadata: Invalid value" in info.value.message


def test_self_subject_access_review(authz: RBACAuthorizer) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {"creationTimestamp": None},
        "spec": {"resourceAttributes": {"namespace": "ns1", "verb": "get", "resource": "pods"}},
    }
    assert review_self_subject_access(review, ALICE, authz)["status"]["allowed"] is True
    bob = UserInfo(name="bob", groups=("system:authenticated",))
    assert review_self_subject_access(review, bob, authz)["status"] == {"allowed": False}
    with pytest.raises(KubesimError) as info:
        review_self_subject_access({**review, "spec": {}}, ALICE, authz)
    assert info.value.code == 422


def test_local_subject_access_review(authz: RBACAuthorizer) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "LocalSubjectAccessReview",
        "metadata": {"namespace": "ns1"},
        "spec": {
            "user": "alice",
            "resourceAttributes": {"namespace": "ns1", "verb": "get", "resource": "pods"},
        },
    }
    assert review_local_subject_access(review, "ns1", authz)["status"]["allowed"] is True
    with pytest.raises(KubesimError) as info:
        review_local_subject_access(review, "ns2", authz)
    assert info.value.code == 400


def test_self_subject_rules_review(authz: RBACAuthorizer) -> None:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": "ns1"},
    }
    out = review_self_subject_rules(review, ALICE, authz)
    assert out["spec"] == {}
    status = out["status"]
    assert status["incomplete"] is False
    assert {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]} in status[
        "resourceRules"
    ]
    assert {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    } in status["resourceRules"]
    assert any("/version" in r["nonResourceURLs"] for r in status["nonResourceRules"])
    other = review_self_subject_rules({**review, "spec": {"namespace": "ns2"}}, ALICE, authz)
    assert {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]} not in other[
        "status"
    ]["resourceRules"]
    with pytest.raises(KubesimError) as info:
        review_self_subject_rules({**review, "spec": {}}, ALICE, authz)
    assert (info.value.code, info.value.message) == (400, "no namespace on request")


def test_self_subject_rules_review_reports_missing_roles(
    objects: Objects, authz: RBACAuthorizer
) -> None:
    objects.add(
        RBAC_GROUP,
        "rolebindings",
        {
            "metadata": {"name": "dangling", "namespace": "ns1"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "gone"},
            "subjects": [{"kind": "User", "name": "alice"}],
        },
    )
    review = {"kind": "SelfSubjectRulesReview", "spec": {"namespace": "ns1"}}
    status = review_self_subject_rules(review, ALICE, authz)["status"]
    assert status["evaluationError"] == 'role.rbac.authorization.k8s.io "gone" not found'


def test_self_subject_review() -> None:
    out = review_self_subject(ALICE)
    assert out["status"] == {"userInfo": {"username": "alice", "groups": ["system:authenticated"]}}


def test_can_i_as_another_user(authz: RBACAuthorizer) -> None:
    """``kubectl auth can-i --as alice``: impersonation first, then the review for alice."""
    admin = UserInfo(name="root", groups=("system:masters", "system:authenticated"))
    acting = impersonate(admin, [("Impersonate-User", "alice")], authz.authorize)
    review = {
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "ns1", "verb": "list", "resource": "pods"}},
    }
    assert review_self_subject_access(review, acting, authz)["status"]["allowed"] is True
    secrets = {**review, "spec": {"resourceAttributes": {"verb": "list", "resource": "secrets"}}}
    assert review_self_subject_access(secrets, acting, authz)["status"] == {"allowed": False}
