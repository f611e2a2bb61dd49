"""ServiceAccount JWTs: signing, tampering, the token controller's Secret, and TokenRequest."""

from __future__ import annotations

import base64
import calendar
import json
import time
from collections.abc import Sequence

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from clusternet_aa.sandbox.kubesim.tokens import (
    LEGACY_ISSUER,
    TokenError,
    TokenSigner,
    fill_service_account_token_secret,
    issue_token_request,
    peek_claims,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SA: Obj = {"metadata": {"name": "robot", "namespace": "ns1", "uid": "sa-uid-1"}}


@pytest.fixture(scope="module")
def signer() -> TokenSigner:
    return TokenSigner()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def token_secret(name: str = "robot-token", **annotations: str) -> Obj:
    return {
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": name,
            "namespace": "ns1",
            "uid": "secret-uid",
            "annotations": {"kubernetes.io/service-account.name": "robot", **annotations},
        },
    }


def test_sign_and_verify_round_trip(signer: TokenSigner) -> None:
    token = signer.sign({"sub": "x", "n": 1})
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "kid": signer.key_id}
    assert signer.verify(token) == {"sub": "x", "n": 1}


def test_signature_verifies_with_the_published_key(signer: TokenSigner) -> None:
    """The key from jwks()/public_key_pem() checks the signature, as an OIDC client would."""
    token = signer.sign({"sub": "x"})
    head, payload, signature = token.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    key = serialization.load_pem_public_key(signer.public_key_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    jwk = signer.jwks()["keys"][0]
    x = int.from_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="), "big")
    assert x == key.public_numbers().x


def test_tampered_payload_is_rejected(signer: TokenSigner) -> None:
    head, _, signature = signer.sign({"sub": "system:serviceaccount:ns1:robot"}).split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"system:serviceaccount:kube-system:admin"}')
    with pytest.raises(TokenError):
        signer.verify(f"{head}.{forged.decode().rstrip('=')}.{signature}")


def test_other_instance_and_alg_none_are_rejected(signer: TokenSigner) -> None:
    with pytest.raises(TokenError):
        signer.verify(TokenSigner().sign({"sub": "x"}))
    none_header = base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    payload = signer.sign({"sub": "x"}).split(".")[1]
    with pytest.raises(TokenError):
        signer.verify(f"{none_header}.{payload}.")
    with pytest.raises(TokenError):
        signer.verify("not-a-jwt")
    assert peek_claims("a.b") is None


def test_fill_service_account_token_secret(signer: TokenSigner) -> None:
    secret = token_secret()
    filled = fill_service_account_token_secret(
        secret, service_account=SA, signer=signer, ca_pem=CA_PEM
    )
    assert "data" not in secret  # the input is not modified
    assert unb64(filled["data"]["ca.crt"]).encode() == CA_PEM
    assert unb64(filled["data"]["namespace"]) == "ns1"
    annotations = filled["metadata"]["annotations"]
    assert annotations["kubernetes.io/service-account.uid"] == "sa-uid-1"
    claims = signer.verify(unb64(filled["data"]["token"]))
    assert claims == {
        "iss": LEGACY_ISSUER,
        "kubernetes.io/serviceaccount/namespace": "ns1",
        "kubernetes.io/serviceaccount/secret.name": "robot-token",
        "kubernetes.io/serviceaccount/service-account.name": "robot",
        "kubernetes.io/serviceaccount/service-account.uid": "sa-uid-1",
        "sub": "system:serviceaccount:ns1:robot",
    }
    # A second pass keeps the token and refreshes a stale CA.
    again = fill_service_account_token_secret(
        filled, service_account=SA, signer=signer, ca_pem=b"new-ca"
    )
    assert again["data"]["token"] == filled["data"]["token"]
    assert unb64(again["data"]["ca.crt"]) == "new-ca"


def test_fill_refuses_a_secret_of_another_service_account(signer: TokenSigner) -> None:
    stale = token_secret(**{"kubernetes.io/service-account.uid": "old-uid"})
    with pytest.raises(ValueError, match="another service account"):
        fill_service_account_token_secret(stale, service_account=SA, signer=signer, ca_pem=CA_PEM)
    wrong_type = {**token_secret(), "type": "Opaque"}
    with pytest.raises(ValueError, match="type"):
        fill_service_account_token_secret(
            wrong_type, service_account=SA, signer=signer, ca_pem=CA_PEM
        )


def test_token_request_defaults(signer: TokenSigner) -> None:
    before = time.time()
    out = issue_token_request(
        SA, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}, signer=signer
    )
    assert out["spec"] == {
        "expirationSeconds": 3600,
        "audiences": ["https://kubernetes.default.svc.cluster.local"],
    }
    claims = signer.verify(out["status"]["token"])
    assert claims["aud"] == ["https://kubernetes.default.svc.cluster.local"]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"] >= int(before)
    assert claims["sub"] == "system:serviceaccount:ns1:robot"
    assert claims["iss"] == signer.issuer
    assert claims["jti"]
    assert claims["kubernetes.io"] == {
        "namespace": "ns1",
        "serviceaccount": {"name": "robot", "uid": "sa-uid-1"},
    }
    expires = time.strptime(out["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert calendar.timegm(expires) == claims["exp"]


def test_token_request_audiences_and_expiry(signer: TokenSigner) -> None:
    request = {"spec": {"audiences": ["vault"], "expirationSeconds": 600}}
    claims = signer.verify(issue_token_request(SA, request, signer=signer)["status"]["token"])
    assert claims["aud"] == ["vault"]
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (599, "may not specify a duration less than 10 minutes"),
        ((1 << 32) + 1, "may not specify a duration larger than 2^32 seconds"),
    ],
)
def test_token_request_expiration_is_validated(
    signer: TokenSigner, seconds: int, message: str
) -> None:
    with pytest.raises(KubesimError) as info:
        issue_token_request(SA, {"spec": {"expirationSeconds": seconds}}, signer=signer)
    assert info.value.code == 422
    assert info.value.message == (
        f'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: '
        f"Invalid value: {seconds}: {message}"
    )


def test_token_request_name_must_match(signer: TokenSigner) -> None:
    with pytest.raises(KubesimError) as info:
        issue_token_request(SA, {"metadata": {"name": "other"}}, signer=signer)
    assert info.value.code == 422


def lister_of(*objs: tuple[str, Obj]):  # type: ignore[no-untyped-def]
    def lister(group: str, resource: str, namespace: str | None) -> Sequence[Obj]:
        return [
            o
            for r, o in objs
            if r == resource and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]

    return lister


def test_token_request_bound_to_a_secret(signer: TokenSigner) -> None:
    secret = {"metadata": {"name": "s", "namespace": "ns1", "uid": "s-uid"}}
    lister = lister_of(("secrets", secret))
    ref = {"apiVersion": "v1", "kind": "Secret", "name": "s"}
    out = issue_token_request(SA, {"spec": {"boundObjectRef": ref}}, signer=signer, lister=lister)
    claims = signer.verify(out["status"]["token"])
    assert claims["kubernetes.io"]["secret"] == {"name": "s", "uid": "s-uid"}
    stale = {**ref, "uid": "old"}
    with pytest.raises(KubesimError) as info:
        issue_token_request(SA, {"spec": {"boundObjectRef": stale}}, signer=signer, lister=lister)
    assert info.value.code == 409
    missing = {**ref, "name": "nope"}
    with pytest.raises(KubesimError) as info:
        issue_token_request(SA, {"spec": {"boundObjectRef": missing}}, signer=signer, lister=lister)
    assert info.value.code == 404


def test_token_request_bound_to_a_pod_of_another_service_account(signer: TokenSigner) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns1", "uid": "p-uid"},
        "spec": {"serviceAccountName": "default"},
    }
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "p"}
    with pytest.raises(KubesimError) as info:
        issue_token_request(
            SA, {"spec": {"boundObjectRef": ref}}, signer=signer, lister=lister_of(("pods", pod))
        )
    assert info.value.code == 400
    bad_kind = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}
    with pytest.raises(KubesimError) as info:
        issue_token_request(
            SA, {"spec": {"boundObjectRef": bad_kind}}, signer=signer, lister=lister_of()
        )
    assert info.value.message == "cannot bind token to object of type apps/v1, Kind=Deployment"
