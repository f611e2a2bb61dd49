"""ServiceAccount tokens: signing, verifying, and what kube's token controller and TokenRequest do.

kube-apiserver issues two kinds of ServiceAccount JWT, and kubesim issues both so that clients
see the same shapes:

* *legacy* tokens, written by the token controller into Secrets of type
  ``kubernetes.io/service-account-token``: issuer ``kubernetes/serviceaccount``, flat
  ``kubernetes.io/serviceaccount/...`` claims, no audience and no expiry;
* *bound* tokens from ``POST serviceaccounts/<name>/token`` (TokenRequest): the configured issuer,
  ``aud``, ``exp``, ``iat``, ``nbf``, ``jti`` and a nested ``kubernetes.io`` claim naming the
  ServiceAccount and, optionally, the Secret, Pod or Node the token is bound to.

Each kubesim instance has its own key, so a token from one instance never works on another.
JWTs are ES256, built directly with ``cryptography`` (kube-apiserver accepts RS256 and ES256 keys).
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ObjectLister

#: The issuer kube-apiserver uses unless ``--service-account-issuer`` says otherwise.
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
#: The issuer of tokens written into ServiceAccount token Secrets.
LEGACY_ISSUER = "kubernetes/serviceaccount"
#: TokenRequest's ``spec.expirationSeconds`` default (kube's SetDefaults_TokenRequestSpec).
DEFAULT_EXPIRATION_SECONDS = 3600
#: go-jose's default clock skew allowance, which kube uses when checking exp/nbf/iat.
LEEWAY_SECONDS = 60

SA_TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"
SA_NAME_ANNOTATION = "kubernetes.io/service-account.name"
SA_UID_ANNOTATION = "kubernetes.io/service-account.uid"

_ALGORITHM = "ES256"
_COORDINATE_BYTES = 32


class TokenError(Exception):
    """A token that is not valid; the message is what kube puts in a TokenReview's status.error."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise TokenError("malformed token") from e


def peek_claims(token: str) -> dict[str, Any] | None:
    """The claims of a compact JWT *without* verifying it, or None when it is not a JWT.

    kube's authenticators do the same to decide whether a token is theirs (by its issuer)
    before spending a signature check on it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(_b64url_decode(parts[1]))
    except (TokenError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


class TokenSigner:
    """Signs and verifies this kubesim instance's ServiceAccount JWTs.

    ``api_audiences`` are what kube-apiserver calls ``--api-audiences``: the audiences a
    TokenRequest gets when it names none, and the audiences a token must carry to be accepted
    for API requests. They default to the issuer, as in kube-apiserver.
    """

    def __init__(self, *, issuer: str = DEFAULT_ISSUER, api_audiences: Sequence[str] = ()) -> None:
        self.issuer = issuer
        self.api_audiences: tuple[str, ...] = tuple(api_audiences) or (issuer,)
        self._key = ec.generate_private_key(ec.SECP256R1())
        public_der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # kube's key id: the base64url SHA-256 of the DER public key.
        self.key_id = _b64url(hashlib.sha256(public_der).digest())

    def public_key_pem(self) -> bytes:
        """The verification key, as ``--service-account-key-file`` would hold it."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def jwks(self) -> Obj:
        """The key set kube serves at ``/openid/v1/jwks``."""
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "use": "sig",
                    "kty": "EC",
                    "kid": self.key_id,
                    "crv": "P-256",
                    "alg": _ALGORITHM,
                    "x": _b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big")),
                    "y": _b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big")),
                }
            ]
        }

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS of ``claims``; no claim is added or checked."""
        header = {"alg": _ALGORITHM, "kid": self.key_id}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, dict(claims))
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{signing_input}.{_b64url(raw)}"

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` after checking its signature (not its times or audiences)."""
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("compact JWS format must have three parts")
        try:
            header = json.loads(_b64url_decode(parts[0]))
        except ValueError as e:
            raise TokenError("malformed token header") from e
        if not isinstance(header, dict) or header.get("alg") != _ALGORITHM:
            raise TokenError("unexpected signature algorithm")
        signature = _b64url_decode(parts[2])
        if len(signature) != 2 * _COORDINATE_BYTES:
            raise TokenError("error in cryptographic primitive")
        r = int.from_bytes(signature[:_COORDINATE_BYTES], "big")
        s = int.from_bytes(signature[_COORDINATE_BYTES:], "big")
        try:
            self._key.public_key().verify(
                encode_dss_signature(r, s),
                f"{parts[0]}.{parts[1]}".encode("ascii"),
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature as e:
            raise TokenError("error in cryptographic primitive") from e
        claims = peek_claims(token)
        if claims is None:
            raise TokenError("malformed token payload")
        return claims

    def legacy_token(self, service_account: Obj, secret: Obj) -> str:
        """The token kube's token controller writes into a ServiceAccount token Secret."""
        sa_meta = service_account["metadata"]
        namespace = sa_meta["namespace"]
        return self.sign(
            {
                "iss": LEGACY_ISSUER,
                "kubernetes.io/serviceaccount/namespace": namespace,
                "kubernetes.io/serviceaccount/secret.name": secret["metadata"]["name"],
                "kubernetes.io/serviceaccount/service-account.name": sa_meta["name"],
                "kubernetes.io/serviceaccount/service-account.uid": sa_meta.get("uid", ""),
                "sub": f"system:serviceaccount:{namespace}:{sa_meta['name']}",
            }
        )

    def bound_token(
        self,
        service_account: Obj,
        *,
        audiences: Sequence[str],
        expiration_seconds: int,
        bound_object: Obj | None = None,
        now: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A TokenRequest token and its claims; ``bound_object`` is a Secret, Pod or Node."""
        issued = int(time.time() if now is None else now)
        sa_meta = service_account["metadata"]
        namespace = sa_meta["namespace"]
        private: dict[str, Any] = {
            "namespace": namespace,
            "serviceaccount": {"name": sa_meta["name"], "uid": sa_meta.get("uid", "")},
        }
        if bound_object is not None:
            kind = str(bound_object.get("kind", "")).lower()
            meta = bound_object["metadata"]
            private[kind] = {"name": meta["name"], "uid": meta.get("uid", "")}
        claims: dict[str, Any] = {
            "aud": list(audiences),
            "exp": issued + expiration_seconds,
            "iat": issued,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": private,
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{sa_meta['name']}",
        }
        return self.sign(claims), claims


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def fill_service_account_token_secret(
    secret: Obj, *, service_account: Obj, signer: TokenSigner, ca_pem: bytes
) -> Obj:
    """The Secret as kube's token controller leaves it: token, ca.crt, namespace and the SA uid.

    Only what is missing or stale is filled in (as ``generateTokenIfNeeded``): an existing token
    is kept, ``ca.crt`` is replaced when it differs from the current CA. The caller decides that
    the Secret belongs to this ServiceAccount (type and ``kubernetes.io/service-account.name``);
    a Secret whose uid annotation names another ServiceAccount is refused, since kube's controller
    deletes such a Secret rather than filling it.
    """
    if secret.get("type") != SA_TOKEN_SECRET_TYPE:
        raise ValueError(f"secret type is {secret.get('type')!r}, not {SA_TOKEN_SECRET_TYPE!r}")
    sa_meta = service_account["metadata"]
    annotations = secret.get("metadata", {}).get("annotations") or {}
    if annotations.get(SA_NAME_ANNOTATION) != sa_meta["name"]:
        raise ValueError("secret does not reference this service account")
    sa_uid = sa_meta.get("uid", "")
    if annotations.get(SA_UID_ANNOTATION) and annotations[SA_UID_ANNOTATION] != sa_uid:
        raise ValueError("secret references another service account with the same name")

    filled = copy.deepcopy(secret)
    meta = filled.setdefault("metadata", {})
    meta.setdefault("annotations", {})
    meta["annotations"][SA_NAME_ANNOTATION] = sa_meta["name"]
    meta["annotations"][SA_UID_ANNOTATION] = sa_uid
    data = filled.get("data") or {}
    filled["data"] = data
    if data.get("ca.crt") != _b64(ca_pem):
        data["ca.crt"] = _b64(ca_pem)
    if not data.get("namespace"):
        data["namespace"] = _b64(meta.get("namespace", sa_meta["namespace"]))
    if not data.get("token"):
        data["token"] = _b64(signer.legacy_token(service_account, filled))
    return filled


def _invalid(name: str, field: str, value: Any, detail: str) -> KubesimError:
    """A 422 Invalid for TokenRequest, worded as kube's ``errors.NewInvalid``."""
    body = f"{field}: Invalid value: {json.dumps(value)}: {detail}"
    return KubesimError(
        422,
        "Invalid",
        f'TokenRequest.authentication.k8s.io "{name}" is invalid: {body}',
        details={
            "name": name,
            "group": "authentication.k8s.io",
            "kind": "TokenRequest",
            "causes": [
                {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {json.dumps(value)}: {detail}",
                    "field": field,
                }
            ],
        },
    )


def _find(lister: ObjectLister, resource: str, namespace: str | None, name: str) -> Obj | None:
    for obj in lister("", resource, namespace):
        if obj.get("metadata", {}).get("name") == name:
            return obj
    return None


def _bound_object(service_account: Obj, ref: Mapping[str, Any], lister: ObjectLister | None) -> Obj:
    """The object a TokenRequest's ``spec.boundObjectRef`` names, checked as kube does."""
    if lister is None:
        raise ValueError("a lister is needed to resolve spec.boundObjectRef")
    sa_meta = service_account["metadata"]
    kind = ref.get("kind", "")
    api_version = ref.get("apiVersion", "")
    name = ref.get("name", "")
    group, _, version = api_version.rpartition("/")
    if group or kind not in ("Pod", "Secret", "Node"):
        raise KubesimError(
            400,
            "BadRequest",
            f"cannot bind token to object of type {group}/{version}, Kind={kind}",
        )
    resource = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}[kind]
    namespace = None if kind == "Node" else sa_meta["namespace"]
    obj = _find(lister, resource, namespace, name)
    if obj is None:
        raise KubesimError(
            404,
            "NotFound",
            f'{resource} "{name}" not found',
            details={"name": name, "kind": resource},
        )
    if kind == "Pod" and obj.get("spec", {}).get("serviceAccountName") != sa_meta["name"]:
        raise KubesimError(
            400,
            "BadRequest",
            f'cannot bind token for serviceaccount "{sa_meta["name"]}" to pod running with '
            "different serviceaccount name.",
        )
    uid = obj.get("metadata", {}).get("uid", "")
    if ref.get("uid") and ref["uid"] != uid:
        raise KubesimError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {kind} "{name}": the UID in the bound object '
            f"reference ({ref['uid']}) does not match the UID in record. The object might have "
            "been deleted and then recreated",
            details={"name": name, "kind": kind},
        )
    return {**obj, "kind": kind}


def issue_token_request(
    service_account: Obj,
    request: Obj,
    *,
    signer: TokenSigner,
    lister: ObjectLister | None = None,
    now: float | None = None,
) -> Obj:
    """Answer ``POST serviceaccounts/<name>/token`` (authentication.k8s.io/v1 TokenRequest).

    Defaults ``expirationSeconds`` to 3600 and ``audiences`` to the API audiences, validates
    as kube (at least 10 minutes, at most 2^32 seconds), resolves ``boundObjectRef`` through
    ``lister`` and returns the TokenRequest with ``status.token`` and
    ``status.expirationTimestamp``.
    """
    if request.get("kind") not in (None, "TokenRequest"):
        raise KubesimError(400, "BadRequest", f"not a TokenRequest: {request.get('kind')}")
    sa_meta = service_account["metadata"]
    out = copy.deepcopy(request)
    out.setdefault("kind", "TokenRequest")
    out.setdefault("apiVersion", "authentication.k8s.io/v1")
    meta = out.setdefault("metadata", {})
    if meta.get("name") and meta["name"] != sa_meta["name"]:
        raise _invalid(
            sa_meta["name"],
            "metadata.name",
            meta["name"],
            "must match the service account name if specified",
        )
    if meta.get("namespace") and meta["namespace"] != sa_meta["namespace"]:
        raise _invalid(
            sa_meta["name"],
            "metadata.namespace",
            meta["namespace"],
            "must match the service account namespace if specified",
        )
    spec = out.get("spec") or {}
    out["spec"] = spec
    expiration = spec.get("expirationSeconds")
    if expiration is None:
        expiration = DEFAULT_EXPIRATION_SECONDS
    if not isinstance(expiration, int) or isinstance(expiration, bool):
        raise KubesimError(400, "BadRequest", "spec.expirationSeconds must be an integer")
    spec["expirationSeconds"] = expiration
    if expiration < 600:
        raise _invalid(
            "",
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration less than 10 minutes",
        )
    if expiration > 1 << 32:
        raise _invalid(
            "",
            "spec.expirationSeconds",
            expiration,
            "may not specify a duration larger than 2^32 seconds",
        )
    if not spec.get("audiences"):
        spec["audiences"] = list(signer.api_audiences)
    ref = spec.get("boundObjectRef")
    bound = _bound_object(service_account, ref, lister) if ref else None
    issued = time.time() if now is None else now
    token, claims = signer.bound_token(
        service_account,
        audiences=spec["audiences"],
        expiration_seconds=expiration,
        bound_object=bound,
        now=issued,
    )
    expires = datetime.fromtimestamp(claims["exp"], tz=UTC)
    out["status"] = {
        "token": token,
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return out
