"""Authentication as kube's chain: client certs, static, ServiceAccount and bootstrap tokens."""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from collections.abc import Sequence

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clusternet_aa.sandbox.kubesim.authn import (
    UID_OID,
    AuthenticationError,
    Authenticator,
    bearer_token,
)
from clusternet_aa.sandbox.kubesim.tokens import (
    TokenSigner,
    fill_service_account_token_secret,
    issue_token_request,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, UserInfo

UNAUTHORIZED = {"code": 401, "reason": "Unauthorized", "message": "Unauthorized"}
SA_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:ns1", "system:authenticated")


class Objects:
    def __init__(self) -> None:
        self.items: dict[str, list[Obj]] = {}

    def add(self, resource: str, obj: Obj) -> Obj:
        self.items.setdefault(resource, []).append(obj)
        return obj

    def remove(self, resource: str, name: str) -> None:
        self.items[resource] = [o for o in self.items[resource] if o["metadata"]["name"] != name]

    def __call__(self, group: str, resource: str, namespace: str | None) -> Sequence[Obj]:
        assert group == ""
        return [
            o
            for o in self.items.get(resource, [])
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return TokenSigner()


@pytest.fixture
def objects() -> Objects:
    objects = Objects()
    objects.add("serviceaccounts", {"metadata": {"name": "robot", "namespace": "ns1", "uid": "u1"}})
    return objects


@pytest.fixture
def authn(objects: Objects, signer: TokenSigner) -> Authenticator:
    return Authenticator(
        lister=objects,
        signer=signer,
        static_tokens={"admin-token": UserInfo(name="admin", groups=("system:masters",))},
        allow_anonymous=False,
    )


def rejected(authn: Authenticator, token: str) -> None:
    with pytest.raises(KubesimError) as info:
        authn.authenticate(authorization=f"Bearer {token}", peer_cert_der=None)
    status = info.value.to_status()
    assert {k: status[k] for k in UNAUTHORIZED} == UNAUTHORIZED


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- static tokens and anonymous ------------------------------------------------------------------


def test_static_token(authn: Authenticator) -> None:
    user = authn.authenticate(authorization="Bearer admin-token", peer_cert_der=None)
    assert user == UserInfo(name="admin", groups=("system:masters", "system:authenticated"))
    assert authn.authenticate(authorization="bearer admin-token", peer_cert_der=None).name == (
        "admin"
    )


def test_unknown_token_is_401_even_with_anonymous(objects: Objects, signer: TokenSigner) -> None:
    authn = Authenticator(lister=objects, signer=signer, static_tokens={}, allow_anonymous=True)
    rejected(authn, "nope")
    with pytest.raises(AuthenticationError, match="invalid bearer token"):
        authn.authenticate_token("nope")


def test_no_credential(objects: Objects, signer: TokenSigner, authn: Authenticator) -> None:
    anonymous = Authenticator(lister=objects, signer=signer, static_tokens={}, allow_anonymous=True)
    expected = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
    assert anonymous.authenticate(authorization=None, peer_cert_der=None) == expected
    # Another scheme, or an empty bearer token, is no credential at all (kube's bearertoken).
    assert anonymous.authenticate(authorization="Basic YTpi", peer_cert_der=None) == expected
    assert anonymous.authenticate(authorization="Bearer ", peer_cert_der=None) == expected
    with pytest.raises(KubesimError) as info:
        authn.authenticate(authorization=None, peer_cert_der=None)
    assert info.value.code == 401


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("  Bearer abc  ") == "abc"
    assert bearer_token("Bearer  abc") is None
    assert bearer_token("Token abc") is None
    assert bearer_token(None) is None


# -- client certificates --------------------------------------------------------------------------


def make_cert(
    common_name: str | None, organizations: Sequence[str], uids: Sequence[str] = ()
) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    if common_name is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    attributes.extend(x509.NameAttribute(UID_OID, uid) for uid in uids)
    name = x509.Name(attributes)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_client_certificate_from_trustme(authn: Authenticator) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("client", common_name="jane", organization_name="devs")
    pem = leaf.cert_chain_pems[0].bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    user = authn.authenticate(authorization=None, peer_cert_der=der)
    assert user.name == "jane"
    assert user.groups == ("devs", "system:authenticated")
    fingerprint = hashlib.sha256(der).hexdigest()
    assert user.extra == {
        "authentication.kubernetes.io/credential-id": (f"X509SHA256={fingerprint}",)
    }


def test_client_certificate_groups_uid_and_precedence(authn: Authenticator) -> None:
    der = make_cert("jane", ["system:masters", "ops"], uids=["jane-uid"])
    user = authn.authenticate(authorization="Bearer admin-token", peer_cert_der=der)
    assert (user.name, user.uid) == ("jane", "jane-uid")
    assert user.groups == ("system:masters", "ops", "system:authenticated")


def test_client_certificate_without_cn_falls_through(authn: Authenticator) -> None:
    der = make_cert(None, ["devs"])
    assert authn.authenticate(authorization="Bearer admin-token", peer_cert_der=der).name == "admin"
    with pytest.raises(KubesimError):
        authn.authenticate(authorization=None, peer_cert_der=der)


def test_client_certificate_with_two_uids_is_rejected(authn: Authenticator) -> None:
    with pytest.raises(KubesimError):
        authn.authenticate(authorization=None, peer_cert_der=make_cert("jane", [], ["a", "b"]))
    with pytest.raises(KubesimError):
        authn.authenticate(authorization=None, peer_cert_der=b"garbage")


# -- legacy ServiceAccount token Secrets ----------------------------------------------------------


def legacy_token(objects: Objects, signer: TokenSigner, name: str = "robot-token") -> str:
    secret = {
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": name,
            "namespace": "ns1",
            "uid": f"{name}-uid",
            "annotations": {"kubernetes.io/service-account.name": "robot"},
        },
    }
    sa = objects("", "serviceaccounts", "ns1")[0]
    filled = fill_service_account_token_secret(
        secret, service_account=sa, signer=signer, ca_pem=b"ca"
    )
    objects.add("secrets", filled)
    return base64.b64decode(filled["data"]["token"]).decode()


def test_legacy_token(objects: Objects, signer: TokenSigner, authn: Authenticator) -> None:
    token = legacy_token(objects, signer)
    user = authn.authenticate(authorization=f"Bearer {token}", peer_cert_der=None)
    assert user == UserInfo(name="system:serviceaccount:ns1:robot", uid="u1", groups=SA_GROUPS)


def test_legacy_token_dies_with_its_secret(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = legacy_token(objects, signer)
    objects.remove("secrets", "robot-token")
    rejected(authn, token)
    with pytest.raises(AuthenticationError, match="Token has been invalidated"):
        authn.authenticate_token(token)


def test_legacy_token_must_match_the_stored_copy(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = legacy_token(objects, signer)
    objects.items["secrets"][0]["data"]["token"] = b64(
        signer.legacy_token(objects("", "serviceaccounts", "ns1")[0], objects.items["secrets"][0])
        + "x"
    )
    rejected(authn, token)


def test_legacy_token_of_a_recreated_service_account(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = legacy_token(objects, signer)
    objects.items["serviceaccounts"][0]["metadata"]["uid"] = "u2"
    with pytest.raises(AuthenticationError, match=r"ServiceAccount UID \(u2\) does not match"):
        authn.authenticate_token(token)


def test_legacy_token_marked_invalid(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = legacy_token(objects, signer)
    labels = {"kubernetes.io/legacy-token-invalid-since": "2024-01-01"}
    objects.items["secrets"][0]["metadata"]["labels"] = labels
    rejected(authn, token)


def test_legacy_token_is_only_for_api_audiences(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = legacy_token(objects, signer)
    with pytest.raises(AuthenticationError, match="is invalid for the target audiences"):
        authn.authenticate_token(token, audiences=["vault"])


# -- bound (TokenRequest) tokens ------------------------------------------------------------------


def request_token(objects: Objects, signer: TokenSigner, spec: Obj | None = None) -> str:
    sa = objects("", "serviceaccounts", "ns1")[0]
    out = issue_token_request(sa, {"spec": spec or {}}, signer=signer, lister=objects)
    return str(out["status"]["token"])


def test_bound_token(objects: Objects, signer: TokenSigner, authn: Authenticator) -> None:
    token = request_token(objects, signer)
    result = authn.authenticate_token(token)
    assert result.audiences == signer.api_audiences
    user = result.user
    assert (user.name, user.uid, user.groups) == (
        "system:serviceaccount:ns1:robot",
        "u1",
        SA_GROUPS,
    )
    jti = signer.verify(token)["jti"]
    assert user.extra == {"authentication.kubernetes.io/credential-id": (f"JTI={jti}",)}


def test_bound_token_with_wrong_service_account_uid(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = request_token(objects, signer)
    objects.items["serviceaccounts"][0]["metadata"]["uid"] = "u2"
    rejected(authn, token)
    objects.remove("serviceaccounts", "robot")
    with pytest.raises(AuthenticationError, match='serviceaccount "robot" not found'):
        authn.authenticate_token(token)


def test_expired_bound_token(objects: Objects, signer: TokenSigner, authn: Authenticator) -> None:
    sa = objects("", "serviceaccounts", "ns1")[0]
    old, _ = signer.bound_token(
        sa, audiences=signer.api_audiences, expiration_seconds=600, now=time.time() - 700
    )
    with pytest.raises(AuthenticationError, match="service account token has expired"):
        authn.authenticate_token(old)
    rejected(authn, old)
    # Within go-jose's one-minute leeway the token is still good.
    recent, _ = signer.bound_token(
        sa, audiences=signer.api_audiences, expiration_seconds=600, now=time.time() - 630
    )
    assert authn.authenticate_token(recent).user.uid == "u1"


def test_tampered_and_foreign_bound_tokens(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    token = request_token(objects, signer)
    head, payload, signature = token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    rejected(authn, f"{head}.{flipped}.{signature}")
    foreign = TokenSigner()
    sa = objects("", "serviceaccounts", "ns1")[0]
    other, _ = foreign.bound_token(sa, audiences=foreign.api_audiences, expiration_seconds=600)
    rejected(authn, other)


def test_bound_token_audiences(objects: Objects, signer: TokenSigner, authn: Authenticator) -> None:
    token = request_token(objects, signer, {"audiences": ["vault", "other"]})
    rejected(authn, token)  # not valid for the API server itself
    assert authn.authenticate_token(token, audiences=["vault"]).audiences == ("vault",)


def test_secret_bound_token_dies_with_the_secret(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    objects.add("secrets", {"metadata": {"name": "s", "namespace": "ns1", "uid": "s-uid"}})
    token = request_token(
        objects, signer, {"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "s"}}
    )
    assert authn.authenticate_token(token).user.name == "system:serviceaccount:ns1:robot"
    objects.items["secrets"][0]["metadata"]["uid"] = "s-uid-2"
    rejected(authn, token)
    objects.remove("secrets", "s")
    with pytest.raises(AuthenticationError, match="Token has been invalidated"):
        authn.authenticate_token(token)


def test_pod_bound_token_carries_the_pod(
    objects: Objects, signer: TokenSigner, authn: Authenticator
) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns1", "uid": "p-uid"},
        "spec": {"serviceAccountName": "robot"},
    }
    objects.add("pods", pod)
    token = request_token(
        objects, signer, {"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}
    )
    extra = authn.authenticate_token(token).user.extra
    assert extra["authentication.kubernetes.io/pod-name"] == ("p",)
    assert extra["authentication.kubernetes.io/pod-uid"] == ("p-uid",)


# -- bootstrap tokens -----------------------------------------------------------------------------


def bootstrap_secret(objects: Objects, **data: str) -> Obj:
    values = {
        "token-id": "abcdef",
        "token-secret": "0123456789abcdef",
        "usage-bootstrap-authentication": "true",
        **data,
    }
    return objects.add(
        "secrets",
        {
            "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"},
            "data": {k: b64(v) for k, v in values.items()},
        },
    )


TOKEN = "abcdef.0123456789abcdef"


def test_bootstrap_token(objects: Objects, authn: Authenticator) -> None:
    in_an_hour = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    bootstrap_secret(
        objects,
        expiration=in_an_hour.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{"auth-extra-groups": "system:bootstrappers:worker,system:bootstrappers:a-b"},
    )
    user = authn.authenticate(authorization=f"Bearer {TOKEN}", peer_cert_der=None)
    assert user == UserInfo(
        name="system:bootstrap:abcdef",
        groups=(
            "system:bootstrappers",
            "system:bootstrappers:a-b",
            "system:bootstrappers:worker",
            "system:authenticated",
        ),
    )


def test_expired_bootstrap_token(objects: Objects, authn: Authenticator) -> None:
    bootstrap_secret(objects, expiration="2020-01-01T00:00:00Z")
    rejected(authn, TOKEN)


def test_bootstrap_token_wrong_secret(objects: Objects, authn: Authenticator) -> None:
    bootstrap_secret(objects)
    rejected(authn, "abcdef.0123456789abcdee")
    rejected(authn, "abcdeg.0123456789abcdef")


@pytest.mark.parametrize(
    "data",
    [
        {"usage-bootstrap-authentication": "false"},
        {"token-id": "zzzzzz"},
        {"auth-extra-groups": "system:masters"},
        {"expiration": "not a time"},
    ],
)
def test_bootstrap_token_refusals(
    objects: Objects, authn: Authenticator, data: dict[str, str]
) -> None:
    bootstrap_secret(objects, **data)
    rejected(authn, TOKEN)


def test_bootstrap_token_needs_the_bootstrap_type(objects: Objects, authn: Authenticator) -> None:
    bootstrap_secret(objects)["type"] = "Opaque"
    rejected(authn, TOKEN)
