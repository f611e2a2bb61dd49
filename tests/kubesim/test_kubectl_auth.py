"""Every way to authenticate, used by real kubectl (both binaries) against a running kubesim.

``kubectl auth whoami`` (a protobuf SelfSubjectReview) shows the identity the server derived;
a follow-up request shows RBAC acting on that identity.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from clusternet_aa.sandbox.kubesim import kubeconfig
from clusternet_aa.sandbox.kubesim.protobuf import MAGIC, decode_protobuf
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.types import KubesimError
from tests.kubesim.conftest import Kubectl

BOOTSTRAP = """\
apiVersion: v1
kind: Secret
metadata: {name: bootstrap-token-abcdef, namespace: kube-system}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: abcdef
  token-secret: 0123456789abcdef
  usage-bootstrap-authentication: "true"
  auth-extra-groups: system:bootstrappers:worker
"""

SA_TOKEN_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: robot-token
  annotations: {kubernetes.io/service-account.name: robot}
type: kubernetes.io/service-account-token
"""


async def whoami(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    out = await kubectl.run("auth", "whoami", "-o", "json", *args)
    review = json.loads(out.stdout)
    assert review["kind"] == "SelfSubjectReview"
    info: dict[str, Any] = review["status"]["userInfo"]
    return info


def as_user(kubectl: Kubectl, sim: KubesimServer, name: str, config: dict[str, Any]) -> Kubectl:
    """A kubectl for the same binary and HOME, using ``config`` as its kubeconfig."""
    path = kubeconfig.write(kubectl.home / f"{name}.kubeconfig", config)
    return Kubectl(kubectl.binary, path, kubectl.home)


async def test_admin_token_and_client_certificate(kubectl: Kubectl, sim: KubesimServer) -> None:
    admin = await whoami(kubectl)
    assert admin["username"] == "admin"
    assert admin["groups"] == ["system:masters", "system:authenticated"]
    cert = sim.pki.issue_client_cert("carol", ["devs", "ops"])
    carol = as_user(kubectl, sim, "carol", sim.kubeconfig(client=cert, user="carol"))
    identity = await whoami(carol)
    assert identity["username"] == "carol"
    assert identity["groups"] == ["devs", "ops", "system:authenticated"]
    [credential] = identity["extra"]["authentication.kubernetes.io/credential-id"]
    assert credential.startswith("X509SHA256=")
    denied = await carol.run("get", "cm", check=False)
    assert denied.returncode == 1
    assert 'User "carol" cannot list resource "configmaps"' in denied.stderr


async def test_bootstrap_token(kubectl: Kubectl) -> None:
    await kubectl.run("apply", "-f", "-", stdin=BOOTSTRAP)
    token = "abcdef.0123456789abcdef"
    identity = await whoami(kubectl, "--token", token)
    assert identity == {
        "username": "system:bootstrap:abcdef",
        "groups": ["system:bootstrappers", "system:bootstrappers:worker", "system:authenticated"],
    }
    wrong = await kubectl.run("get", "ns", "--token", "abcdef.0123456789abcdee", check=False)
    assert wrong.returncode == 1
    assert "Unauthorized" in wrong.stderr
    denied = await kubectl.run("get", "ns", "--token", token, check=False)
    assert 'User "system:bootstrap:abcdef" cannot list resource "namespaces"' in denied.stderr
    await kubectl.run("delete", "secret", "-n", "kube-system", "bootstrap-token-abcdef")
    gone = await kubectl.run("auth", "whoami", "--token", token, check=False)
    assert "Unauthorized" in gone.stderr


async def test_service_account_tokens(kubectl: Kubectl, sim: KubesimServer) -> None:
    await kubectl.run("create", "serviceaccount", "robot")
    await kubectl.run("create", "role", "reader", "--verb=get,list", "--resource=configmaps")
    await kubectl.run(
        "create", "rolebinding", "reader", "--role=reader", "--serviceaccount=default:robot"
    )
    await kubectl.run("apply", "-f", "-", stdin=SA_TOKEN_SECRET)
    await sim.settle()
    encoded = await kubectl.run("get", "secret", "robot-token", "-o", "jsonpath={.data.token}")
    legacy = base64.b64decode(encoded.stdout).decode()
    bound = (await kubectl.run("create", "token", "robot", "--duration=10m")).stdout.strip()
    sa_uid = (await kubectl.run("get", "sa", "robot", "-o", "jsonpath={.metadata.uid}")).stdout
    for token in (legacy, bound):
        identity = await whoami(kubectl, "--token", token)
        assert identity["username"] == "system:serviceaccount:default:robot"
        assert identity["uid"] == sa_uid
        assert identity["groups"] == [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated",
        ]
        listed = await kubectl.run("get", "cm", "-o", "name", "--token", token)
        assert "configmap/kube-root-ca.crt" in listed.stdout.split()
        secrets = await kubectl.run("get", "secrets", "--token", token, check=False)
        assert secrets.returncode == 1
        assert "cannot list resource" in secrets.stderr
    # A legacy token dies with its Secret; a bound token does not depend on it.
    await kubectl.run("delete", "secret", "robot-token")
    dead = await kubectl.run("get", "cm", "--token", legacy, check=False)
    assert "Unauthorized" in dead.stderr
    assert (await whoami(kubectl, "--token", bound))["username"].endswith(":robot")


async def test_kubectl_impersonation_flags_and_kubeconfig_extra(
    kubectl: Kubectl, sim: KubesimServer
) -> None:
    """--as/--as-group/--as-uid and ``as-user-extra`` from a user who may only do some of it."""
    # kubectl's --resource only takes discoverable resources; uids and userextras are not.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "imp"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["users", "groups"],
                "resourceNames": ["bob", "g1"],
                "verbs": ["impersonate"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["uids", "userextras/example.com/scopes"],
                "resourceNames": ["u1", "s1"],
                "verbs": ["impersonate"],
            },
        ],
    }
    await kubectl.run("apply", "-f", "-", stdin=json.dumps(role))
    await kubectl.run("create", "clusterrolebinding", "imp", "--clusterrole=imp", "--user=carol")
    cert = sim.pki.issue_client_cert("carol")
    config = sim.kubeconfig(client=cert, user="carol")
    carol = as_user(kubectl, sim, "carol", config)
    bob = await whoami(carol, "--as=bob", "--as-group=g1", "--as-uid=u1")
    assert bob == {"username": "bob", "uid": "u1", "groups": ["g1", "system:authenticated"]}
    denied = await carol.run("get", "cm", "--as=bob", "--as-group=g2", check=False)
    assert denied.returncode == 1
    assert (
        'groups "g2" is forbidden: User "carol" cannot impersonate resource "groups" '
        'in API group "" at the cluster scope'
    ) in denied.stderr
    # client-go escapes the key into Impersonate-Extra-example.com%2fscopes.
    config["users"][0]["user"].update(
        {"as": "bob", "as-user-extra": {"example.com/scopes": ["s1"]}}
    )
    with_extra = await whoami(as_user(kubectl, sim, "extra", config))
    assert with_extra["extra"] == {"example.com/scopes": ["s1"]}
    config["users"][0]["user"]["as-user-extra"] = {"example.com/scopes": ["s2"]}
    refused = await as_user(kubectl, sim, "extra2", config).run("get", "cm", check=False)
    assert 'cannot impersonate resource "userextras/example.com/scopes"' in refused.stderr


def no_credentials(server: KubesimServer) -> dict[str, Any]:
    """A kubeconfig for the plain-HTTP listener with no user credentials.

    Over HTTPS kubectl would prompt for a user name when the kubeconfig has no credentials;
    over plain HTTP it sends the requests as they are, so the server sees no credentials.
    """
    assert server.http_url is not None
    config = server.kubeconfig(token="")
    config["clusters"][0]["cluster"] = {"server": server.http_url}
    config["users"][0]["user"] = {}
    return config


async def test_anonymous_on_and_off(kubectl: Kubectl) -> None:
    async with running_kubesim(KubesimConfig(nodes=0, http_port=0)) as open_sim:
        anonymous = as_user(kubectl, open_sim, "anonymous", no_credentials(open_sim))
        version = await anonymous.run("get", "--raw", "/version")
        assert json.loads(version.stdout)["gitVersion"] == "v1.37.0"
        # kube binds system:basic-user (SelfSubjectReviews) to authenticated users only.
        who = await anonymous.run("auth", "whoami", check=False)
        assert "you do not have permission to call it" in who.stderr
        # As in kube, anonymous may not read discovery (system:discovery is for the
        # authenticated), so kubectl get fails there; --raw reaches the resource itself.
        denied = await anonymous.run("get", "cm", check=False)
        assert "Error from server (Forbidden)" in denied.stderr
        raw = await anonymous.run(
            "get", "--raw", "/api/v1/namespaces/default/configmaps", check=False
        )
        assert 'User "system:anonymous" cannot list resource "configmaps"' in raw.stderr
    config = KubesimConfig(nodes=0, http_port=0, allow_anonymous=False)
    async with running_kubesim(config) as closed:
        refused = as_user(kubectl, closed, "closed", no_credentials(closed))
        for args in (("get", "--raw", "/version"), ("get", "cm")):
            reply = await refused.run(*args, check=False)
            assert reply.returncode == 1
            assert "You must be logged in to the server" in reply.stderr
        admin = as_user(kubectl, closed, "closed-admin", closed.kubeconfig())
        assert (await whoami(admin))["username"] == "admin"


def test_self_subject_review_protobuf_is_decoded_and_extra_refused() -> None:
    """The body kubectl 1.32 and 1.37 send for ``auth whoami``, and one setting UserInfo.extra."""
    type_meta = b"\n\x18authentication.k8s.io/v1\x12\x11SelfSubjectReview"
    meta = b'\n\x00\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00'

    def envelope(user_info: bytes) -> bytes:
        status = b"\n" + bytes([len(user_info)]) + user_info
        raw = b"\n" + bytes([len(meta)]) + meta + b"\x12" + bytes([len(status)]) + status
        unknown = b"\n" + bytes([len(type_meta)]) + type_meta
        unknown += b"\x12" + bytes([len(raw)]) + raw + b'\x1a\x00"\x00'
        return MAGIC + unknown

    sent = envelope(b"\n\x00\x12\x00")
    assert decode_protobuf(sent) == {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "status": {"userInfo": {}},
    }
    with pytest.raises(KubesimError) as refused:
        decode_protobuf(envelope(b"\n\x00\x12\x00\x22\x03\n\x01k"))
    assert refused.value.code == 415
    assert "authentication.v1.UserInfo.4" in refused.value.message
