"""Authentication: who is calling, decided as kube-apiserver's authenticator chain decides.

Order, as kube: a client certificate first (the TLS layer has already verified the chain against
the client CA), then a bearer token, tried against static tokens, ServiceAccount JWTs (legacy
Secret tokens and bound TokenRequest tokens) and bootstrap tokens. Every authenticated user gets
``system:authenticated``. A presented credential that fails is a 401, even when anonymous
requests are allowed; only a request with *no* credential becomes ``system:anonymous``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from clusternet_aa.sandbox.kubesim.tokens import (
    LEEWAY_SECONDS,
    LEGACY_ISSUER,
    TokenError,
    TokenSigner,
    peek_claims,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ObjectLister, UserInfo

ALL_AUTHENTICATED = "system:authenticated"
ALL_UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS = "system:anonymous"
SA_PREFIX = "system:serviceaccount:"
ALL_SERVICE_ACCOUNTS = "system:serviceaccounts"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
BOOTSTRAP_SECRET_TYPE = "bootstrap.kubernetes.io/token"
BOOTSTRAP_DEFAULT_GROUP = "system:bootstrappers"
#: kube's label on a legacy token Secret that an administrator (or the cleaner) invalidated.
LEGACY_INVALID_SINCE_LABEL = "kubernetes.io/legacy-token-invalid-since"
#: The subject attribute kube reads a user's uid from (AllowParsingUserUIDFromCertAuth).
UID_OID = ObjectIdentifier("1.3.6.1.4.1.14677.1.1.1")

_BOOTSTRAP_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_BOOTSTRAP_GROUP = re.compile(r"\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\Z")
_INVALID_BEARER_TOKEN = "invalid bearer token"


class AuthenticationError(Exception):
    """A credential was presented and rejected; the message is TokenReview's status.error."""


@dataclass(frozen=True)
class TokenResult:
    """A token's user, and the audiences (of those asked for) the token is valid for."""

    user: UserInfo
    audiences: tuple[str, ...]


def service_account_user(
    namespace: str, name: str, uid: str = "", extra: Mapping[str, tuple[str, ...]] | None = None
) -> UserInfo:
    """The identity of a ServiceAccount (without ``system:authenticated``)."""
    return UserInfo(
        name=f"{SA_PREFIX}{namespace}:{name}",
        uid=uid,
        groups=(ALL_SERVICE_ACCOUNTS, f"{ALL_SERVICE_ACCOUNTS}:{namespace}"),
        extra=dict(extra or {}),
    )


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """kube's AuthenticatedGroupAdder: add ``system:authenticated`` unless already decided."""
    if user.name == ANONYMOUS:
        return user
    if ALL_AUTHENTICATED in user.groups or ALL_UNAUTHENTICATED in user.groups:
        return user
    return replace(user, groups=(*user.groups, ALL_AUTHENTICATED))


def user_from_certificate(cert_der: bytes) -> UserInfo | None:
    """The identity in a verified client certificate: CN the user, O the groups.

    None when the certificate has no CN (kube then tries the other authenticators). The uid
    comes from the ``1.3.6.1.4.1.14677.1.1.1`` subject attribute, as kube reads it.
    """
    try:
        cert = x509.load_der_x509_certificate(cert_der)
    except ValueError as e:
        raise AuthenticationError(f"unable to parse client certificate: {e}") from e
    subject = cert.subject
    common_names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not common_names or not common_names[0].value:
        return None
    uids = [str(a.value) for a in subject.get_attributes_for_oid(UID_OID)]
    if len(uids) > 1:
        raise AuthenticationError(f"expected 1 UID, but found multiple: {uids}")
    if uids and not uids[0]:
        raise AuthenticationError("UID cannot be an empty string")
    groups = tuple(str(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
    fingerprint = hashlib.sha256(cert_der).hexdigest()
    return UserInfo(
        name=str(common_names[0].value),
        uid=uids[0] if uids else "",
        groups=groups,
        extra={CREDENTIAL_ID_KEY: (f"X509SHA256={fingerprint}",)},
    )


def _find(lister: ObjectLister, resource: str, namespace: str, name: str) -> Obj | None:
    for obj in lister("", resource, namespace):
        if obj.get("metadata", {}).get("name") == name:
            return obj
    return None


def _secret_value(secret: Obj, key: str) -> str:
    """A decoded ``data`` value of a stored Secret ('' when absent or not valid base64)."""
    raw = (secret.get("data") or {}).get(key)
    if not isinstance(raw, str):
        return ""
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _deleted_before(obj: Obj, moment: float) -> bool:
    stamp = obj.get("metadata", {}).get("deletionTimestamp")
    if not stamp:
        return False
    return _parse_time(stamp) < moment


def _parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []


def _quoted_list(values: Sequence[str]) -> str:
    """Go's ``%q`` of a []string, which kube uses in audience errors."""
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


class Authenticator:
    """kube-apiserver's authenticator chain over kubesim's stored objects.

    ``static_tokens`` maps a bearer token to its user (kube's ``--token-auth-file``).
    """

    def __init__(
        self,
        *,
        lister: ObjectLister,
        signer: TokenSigner,
        static_tokens: Mapping[str, UserInfo],
        allow_anonymous: bool,
    ) -> None:
        self._lister = lister
        self._signer = signer
        self._static_tokens = dict(static_tokens)
        self._allow_anonymous = allow_anonymous

    @property
    def api_audiences(self) -> tuple[str, ...]:
        return self._signer.api_audiences

    def authenticate(self, *, authorization: str | None, peer_cert_der: bytes | None) -> UserInfo:
        """The caller of an API request; KubesimError(401) when a credential is rejected."""
        try:
            user = self._authenticate_request(authorization, peer_cert_der)
        except AuthenticationError as e:
            raise KubesimError(401, "Unauthorized", "Unauthorized") from e
        if user is not None:
            return with_authenticated_group(user)
        if self._allow_anonymous:
            return UserInfo(name=ANONYMOUS, groups=(ALL_UNAUTHENTICATED,))
        raise KubesimError(401, "Unauthorized", "Unauthorized")

    def _authenticate_request(
        self, authorization: str | None, peer_cert_der: bytes | None
    ) -> UserInfo | None:
        if peer_cert_der is not None:
            user = user_from_certificate(peer_cert_der)
            if user is not None:
                return user
        token = bearer_token(authorization)
        if token is None:
            return None
        return self.authenticate_token(token).user

    def authenticate_token(self, token: str, *, audiences: Sequence[str] = ()) -> TokenResult:
        """A bearer token's user, with ``system:authenticated``; AuthenticationError if invalid.

        ``audiences`` are the audiences the caller wants (TokenReview's spec.audiences); empty
        means the API audiences. Audience-agnostic tokens (static, bootstrap, legacy SA) are only
        valid for the API audiences, as in kube.
        """
        wanted = tuple(audiences) or self.api_audiences
        errors: list[str] = []
        implicit = [a for a in wanted if a in self.api_audiences]
        static_user = self._static_tokens.get(token)
        if static_user is not None and implicit:
            return TokenResult(with_authenticated_group(static_user), tuple(implicit))
        try:
            sa_result = self._service_account_token(token, wanted)
        except AuthenticationError as e:
            errors.append(str(e))
        else:
            if sa_result is not None:
                return sa_result
        bootstrap_user = self._bootstrap_token(token)
        if bootstrap_user is not None and implicit:
            return TokenResult(with_authenticated_group(bootstrap_user), tuple(implicit))
        if not errors:
            raise AuthenticationError(_INVALID_BEARER_TOKEN)
        raise AuthenticationError(errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]")

    def _service_account_token(self, token: str, wanted: Sequence[str]) -> TokenResult | None:
        """kube's JWT authenticators: None when the token is not ours (not a JWT, other issuer)."""
        unverified = peek_claims(token)
        if unverified is None:
            return None
        issuer = unverified.get("iss")
        if issuer not in (LEGACY_ISSUER, self._signer.issuer):
            return None
        try:
            claims = self._signer.verify(token)
        except TokenError as e:
            raise AuthenticationError(str(e)) from e
        legacy = issuer == LEGACY_ISSUER
        token_audiences = self.api_audiences if legacy else _as_list(claims.get("aud"))
        matched = tuple(a for a in wanted if a in token_audiences)
        if not matched:
            raise AuthenticationError(
                f"token audiences {_quoted_list(token_audiences)} is invalid for the target "
                f"audiences {_quoted_list(wanted)}"
            )
        user = self._validate_legacy(token, claims) if legacy else self._validate_bound(claims)
        return TokenResult(with_authenticated_group(user), matched)

    def _service_account(self, namespace: str, name: str, uid: str) -> Obj:
        sa = _find(self._lister, "serviceaccounts", namespace, name)
        if sa is None:
            raise AuthenticationError(f'serviceaccount "{name}" not found')
        if sa.get("metadata", {}).get("uid", "") != uid:
            raise AuthenticationError(
                f"ServiceAccount UID ({sa.get('metadata', {}).get('uid', '')}) does not match "
                f"claim ({uid})"
            )
        return sa

    def _validate_legacy(self, token: str, claims: Mapping[str, Any]) -> UserInfo:
        """kube's legacyValidator: the Secret must still hold this very token."""
        prefix = "kubernetes.io/serviceaccount/"
        namespace = str(claims.get(prefix + "namespace") or "")
        secret_name = str(claims.get(prefix + "secret.name") or "")
        sa_name = str(claims.get(prefix + "service-account.name") or "")
        sa_uid = str(claims.get(prefix + "service-account.uid") or "")
        for value, what in (
            (claims.get("sub"), "sub"),
            (namespace, "namespace"),
            (secret_name, "secretName"),
            (sa_name, "serviceAccountName"),
            (sa_uid, "serviceAccountUID"),
        ):
            if not value:
                raise AuthenticationError(f"{what} claim is missing")
        if claims["sub"] != f"{SA_PREFIX}{namespace}:{sa_name}":
            raise AuthenticationError("sub claim is invalid")
        secret = _find(self._lister, "secrets", namespace, secret_name)
        if secret is None or secret.get("metadata", {}).get("deletionTimestamp"):
            raise AuthenticationError("Token has been invalidated")
        if not hmac.compare_digest(_secret_value(secret, "token").encode(), token.encode()):
            raise AuthenticationError("Token does not match server's copy")
        sa = self._service_account(namespace, sa_name, sa_uid)
        if sa.get("metadata", {}).get("deletionTimestamp"):
            raise AuthenticationError(f"ServiceAccount {namespace}/{sa_name} has been deleted")
        if (secret.get("metadata", {}).get("labels") or {}).get(LEGACY_INVALID_SINCE_LABEL):
            raise AuthenticationError(
                f"the token in secret {namespace}/{secret_name} for service account "
                f"{namespace}/{sa_name} has been marked invalid. Use tokens from the TokenRequest "
                "API or manually created secret-based tokens, or remove the "
                f"'{LEGACY_INVALID_SINCE_LABEL}' label from the secret to temporarily allow use "
                "of this token"
            )
        return service_account_user(namespace, sa_name, sa_uid)

    def _validate_bound(self, claims: Mapping[str, Any]) -> UserInfo:
        """kube's bound-token validator: times, then every referenced object still exists."""
        now = time.time()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if isinstance(exp, int | float) and now - LEEWAY_SECONDS > exp:
            raise AuthenticationError("service account token has expired")
        if isinstance(nbf, int | float) and now + LEEWAY_SECONDS < nbf:
            raise AuthenticationError("service account token is not valid yet")
        if isinstance(iat, int | float) and now + LEEWAY_SECONDS < iat:
            raise AuthenticationError("service account token is issued in the future")
        private = claims.get("kubernetes.io")
        if not isinstance(private, dict):
            raise AuthenticationError("service account token claims are missing")
        namespace = str(private.get("namespace") or "")
        sa_ref = private.get("serviceaccount") or {}
        sa_name, sa_uid = str(sa_ref.get("name", "")), str(sa_ref.get("uid", ""))
        if claims.get("sub") != f"{SA_PREFIX}{namespace}:{sa_name}":
            raise AuthenticationError("sub claim is invalid")
        invalid_if_deleted_before = now - LEEWAY_SECONDS
        sa = self._service_account(namespace, sa_name, sa_uid)
        if _deleted_before(sa, invalid_if_deleted_before):
            raise AuthenticationError(f"ServiceAccount {namespace}/{sa_name} has been deleted")
        extra: dict[str, tuple[str, ...]] = {}
        for kind, resource in (("secret", "secrets"), ("pod", "pods"), ("node", "nodes")):
            ref = private.get(kind)
            if not isinstance(ref, dict):
                continue
            scope = "" if kind == "node" else namespace
            obj = _find(self._lister, resource, scope, str(ref.get("name", "")))
            if obj is None or _deleted_before(obj, invalid_if_deleted_before):
                raise AuthenticationError("Token has been invalidated")
            uid = obj.get("metadata", {}).get("uid", "")
            if ref.get("uid", "") != uid:
                raise AuthenticationError(
                    f"{kind.capitalize()} UID ({uid}) does not match claim ({ref.get('uid', '')})"
                )
            if kind == "pod":
                extra[POD_NAME_KEY] = (str(ref["name"]),)
                extra[POD_UID_KEY] = (uid,)
            elif kind == "node":
                extra[NODE_NAME_KEY] = (str(ref["name"]),)
                extra[NODE_UID_KEY] = (uid,)
        if claims.get("jti"):
            extra[CREDENTIAL_ID_KEY] = (f"JTI={claims['jti']}",)
        return service_account_user(namespace, sa_name, sa_uid, extra)

    def _bootstrap_token(self, token: str) -> UserInfo | None:
        """kube's bootstrap token authenticator; None for anything it does not accept."""
        match = _BOOTSTRAP_TOKEN.match(token)
        if match is None:
            return None
        token_id, token_secret = match.groups()
        secret = _find(self._lister, "secrets", "kube-system", f"bootstrap-token-{token_id}")
        if secret is None or secret.get("metadata", {}).get("deletionTimestamp"):
            return None
        if secret.get("type") != BOOTSTRAP_SECRET_TYPE:
            return None
        stored_secret = _secret_value(secret, "token-secret")
        if not hmac.compare_digest(stored_secret.encode(), token_secret.encode()):
            return None
        if _secret_value(secret, "token-id") != token_id:
            return None
        expiration = _secret_value(secret, "expiration")
        if expiration:
            try:
                expired = _parse_time(expiration) <= time.time()
            except ValueError:
                expired = True
            if expired:
                return None
        if _secret_value(secret, "usage-bootstrap-authentication") != "true":
            return None
        groups = {BOOTSTRAP_DEFAULT_GROUP}
        extra_groups = _secret_value(secret, "auth-extra-groups")
        if extra_groups:
            for group in extra_groups.split(","):
                if not _BOOTSTRAP_GROUP.match(group):
                    return None
                groups.add(group)
        return UserInfo(name=f"system:bootstrap:{token_id}", groups=tuple(sorted(groups)))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, as kube's bearertoken parses it.

    Another scheme, or an empty token, counts as no credential at all.
    """
    if authorization is None:
        return None
    parts = authorization.strip().split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]
