"""Impersonation through real HTTP requests: each header kind allowed and denied, end to end.

alice (a static token) may impersonate exactly: user bob, group g1, uid u1, extra ``scopes=s1``
(cluster-wide) and ServiceAccounts in namespace ``ns1`` only (through a RoleBinding). Every
check goes through the server's filter chain (authentication -> impersonation -> RBAC) and the
identity that results is read back with a SelfSubjectReview, as ``kubectl auth whoami`` does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from clusternet_aa.sandbox.kubesim.server import KubesimConfig
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.types import UserInfo
from tests.kubesim.conftest import Raw, Reply

ALICE_TOKEN = "alice-token"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
WHOAMI = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
CM = "/api/v1/namespaces/default/configmaps"
NS1 = {"name": "ns1"}


def impersonate(group: str, resource: str, names: list[str]) -> dict[str, Any]:
    return {
        "apiGroups": [group],
        "resources": [resource],
        "verbs": ["impersonate"],
        "resourceNames": names,
    }


@pytest.fixture
async def alice() -> AsyncIterator[Raw]:
    """A server where alice holds the impersonation rules above; the admin's Raw client.

    Requests made as alice pass ``token=ALICE_TOKEN``.
    """
    config = KubesimConfig(nodes=0, static_tokens={ALICE_TOKEN: UserInfo(name="alice")})
    async with running_kubesim(config) as sim:
        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            admin = Raw(session, sim)
            await grant(admin)
            yield admin


def rbac(kind: str, name: str, namespace: str = "", **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace} if namespace else {"name": name}
    head = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata}
    return head | fields


def ref(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}


async def grant(admin: Raw) -> None:
    rules = [
        impersonate("", "users", ["bob"]),
        impersonate("", "groups", ["g1"]),
        impersonate("authentication.k8s.io", "uids", ["u1"]),
        impersonate("authentication.k8s.io", "userextras/scopes", ["s1"]),
    ]
    read_cms = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    alice_user = [{"kind": "User", "name": "alice"}]
    objects = [
        (f"{RBAC}/clusterroles", rbac("ClusterRole", "impersonator", rules=rules)),
        (
            f"{RBAC}/clusterrolebindings",
            rbac(
                "ClusterRoleBinding",
                "impersonator",
                roleRef=ref("ClusterRole", "impersonator"),
                subjects=alice_user,
            ),
        ),
        # Group g1 may read ConfigMaps: impersonating g1 must grant exactly that.
        (f"{RBAC}/clusterroles", rbac("ClusterRole", "read-cms", rules=read_cms)),
        (
            f"{RBAC}/clusterrolebindings",
            rbac(
                "ClusterRoleBinding",
                "g1-read-cms",
                roleRef=ref("ClusterRole", "read-cms"),
                subjects=[{"kind": "Group", "name": "g1"}],
            ),
        ),
        ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace"} | {"metadata": NS1}),
        # ServiceAccounts may be impersonated in ns1 only.
        (
            f"{RBAC}/namespaces/ns1/roles",
            rbac(
                "Role",
                "sa-impersonator",
                "ns1",
                rules=[
                    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]}
                ],
            ),
        ),
        (
            f"{RBAC}/namespaces/ns1/rolebindings",
            rbac(
                "RoleBinding",
                "sa-impersonator",
                "ns1",
                roleRef=ref("Role", "sa-impersonator"),
                subjects=alice_user,
            ),
        ),
    ]
    for path, body in objects:
        reply = await admin.post(path, body)
        assert reply.status == 201, reply.body


async def whoami(alice: Raw, headers: list[tuple[str, str]]) -> Reply:
    """POST a SelfSubjectReview with repeated headers kept (aiohttp accepts a multidict)."""
    sent: CIMultiDict[str] = CIMultiDict(
        [("Authorization", f"Bearer {ALICE_TOKEN}"), ("Content-Type", "application/json")]
    )
    for name, value in headers:
        sent.add(name, value)
    async with alice.session.post(
        alice.server.url + WHOAMI, data=json.dumps(REVIEW), headers=sent
    ) as response:
        return Reply(response.status, await response.json(), response.headers)


def identity(reply: Reply) -> dict[str, Any]:
    assert reply.status == 201, reply.body
    info: dict[str, Any] = reply.body["status"]["userInfo"]
    return info


def refused(reply: Reply, message: str) -> None:
    assert reply.status == 403, reply.body
    assert reply.body["kind"] == "Status"
    assert reply.body["reason"] == "Forbidden"
    assert reply.body["message"] == message


async def test_without_headers_alice_is_alice(alice: Raw) -> None:
    assert identity(await whoami(alice, [])) == {
        "username": "alice",
        "groups": ["system:authenticated"],
    }


async def test_user(alice: Raw) -> None:
    as_bob = identity(await whoami(alice, [("Impersonate-User", "bob")]))
    assert as_bob == {"username": "bob", "groups": ["system:authenticated"]}
    refused(
        await whoami(alice, [("Impersonate-User", "carol")]),
        'users "carol" is forbidden: User "alice" cannot impersonate resource "users" '
        'in API group "" at the cluster scope',
    )


async def test_group(alice: Raw) -> None:
    headers = [("Impersonate-User", "bob"), ("Impersonate-Group", "g1")]
    assert identity(await whoami(alice, headers))["groups"] == ["g1", "system:authenticated"]
    refused(
        await whoami(alice, [*headers, ("Impersonate-Group", "system:masters")]),
        'groups "system:masters" is forbidden: User "alice" cannot impersonate resource '
        '"groups" in API group "" at the cluster scope',
    )


async def test_uid(alice: Raw) -> None:
    headers = [("Impersonate-User", "bob"), ("Impersonate-Uid", "u1")]
    assert identity(await whoami(alice, headers))["uid"] == "u1"
    refused(
        await whoami(alice, [("Impersonate-User", "bob"), ("Impersonate-Uid", "u2")]),
        'uids.authentication.k8s.io "u2" is forbidden: User "alice" cannot impersonate '
        'resource "uids" in API group "authentication.k8s.io" at the cluster scope',
    )


async def test_extra(alice: Raw) -> None:
    headers = [("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "s1")]
    assert identity(await whoami(alice, headers))["extra"] == {"scopes": ["s1"]}
    refused(
        await whoami(alice, [("Impersonate-User", "bob"), ("Impersonate-Extra-Scopes", "s2")]),
        'userextras.authentication.k8s.io "s2" is forbidden: User "alice" cannot impersonate '
        'resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope',
    )
    refused(
        await whoami(alice, [("Impersonate-User", "bob"), ("Impersonate-Extra-Project", "s1")]),
        'userextras.authentication.k8s.io "s1" is forbidden: User "alice" cannot impersonate '
        'resource "userextras/project" in API group "authentication.k8s.io" at the cluster scope',
    )


async def test_service_account(alice: Raw) -> None:
    robot = identity(await whoami(alice, [("Impersonate-User", "system:serviceaccount:ns1:r")]))
    assert robot == {
        "username": "system:serviceaccount:ns1:r",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated"],
    }
    refused(
        await whoami(alice, [("Impersonate-User", "system:serviceaccount:ns2:r")]),
        'serviceaccounts "r" is forbidden: User "alice" cannot impersonate resource '
        '"serviceaccounts" in API group "" in the namespace "ns2"',
    )


async def test_impersonated_identity_is_what_rbac_sees(alice: Raw) -> None:
    """Impersonating g1 grants g1's rights, and nothing of alice's impersonation rights."""
    as_bob = await alice.get(CM, token=ALICE_TOKEN, headers={"Impersonate-User": "bob"})
    refused(
        as_bob,
        'configmaps is forbidden: User "bob" cannot list resource "configmaps" in API group "" '
        'in the namespace "default"',
    )
    with_g1 = await alice.get(
        CM, token=ALICE_TOKEN, headers={"Impersonate-User": "bob", "Impersonate-Group": "g1"}
    )
    assert with_g1.status == 200
    assert with_g1.body["kind"] == "ConfigMapList"
    # Only the groups alice was granted: one more (system:masters) refuses the whole request.
    chained = await alice.get(
        CM,
        token=ALICE_TOKEN,
        headers={"Impersonate-User": "bob", "Impersonate-Group": "system:masters"},
    )
    assert chained.status == 403


async def test_anonymous_and_bad_requests(alice: Raw) -> None:
    async with alice.session.get(
        alice.server.url + CM, headers={"Impersonate-User": "bob"}
    ) as response:
        body = await response.json()
    assert response.status == 403
    assert body["message"] == (
        'users "bob" is forbidden: User "system:anonymous" cannot impersonate resource "users" '
        'in API group "" at the cluster scope'
    )
    no_user = await whoami(alice, [("Impersonate-Group", "g1")])
    assert no_user.status == 400
    assert no_user.body["reason"] == "BadRequest"
    assert no_user.body["message"] == ("requested [{Group  g1    }] without impersonating a user")
