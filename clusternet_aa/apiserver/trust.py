"""Which client certificates the hub trusts, and for what: front proxy or ordinary user.

Two trust roots, as kube's delegated authentication has them:

* the *request-header* CA (``--requestheader-client-ca-file`` or the ConfigMap key
  ``requestheader-client-ca-file``) signs the aggregator's front-proxy certificate; only a
  connection with such a certificate (clientAuth usage, CN in the allowed names) may assert an
  identity with ``X-Remote-*`` headers;
* the *client* CA (``--client-ca-file`` or ``client-ca-file``) signs user certificates: CN is the
  user, O the groups.

A flag wins over the ConfigMap field by field; the ConfigMap ``kube-system/
extension-apiserver-authentication`` (written by the parent's kube-apiserver, string lists as
JSON arrays) fills the rest and is re-read whenever it changes. Each update swaps in a new
immutable :class:`TrustSnapshot`, so a request never sees half of an update.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from clusternet_aa.apiserver import tls

logger = logging.getLogger(__name__)

AUTH_CONFIGMAP_NAMESPACE = "kube-system"
AUTH_CONFIGMAP_NAME = "extension-apiserver-authentication"

#: A generic extension server's defaults when neither flags nor the ConfigMap name headers.
DEFAULT_USERNAME_HEADERS: tuple[str, ...] = ("X-Remote-User",)
DEFAULT_GROUP_HEADERS: tuple[str, ...] = ("X-Remote-Group",)
DEFAULT_EXTRA_PREFIXES: tuple[str, ...] = ("X-Remote-Extra-",)
DEFAULT_UID_HEADERS: tuple[str, ...] = ()

#: Seconds a certificate's verdict is reused (never past the certificate's notAfter). Chain
#: verification costs about a quarter of a proxied request's CPU in the hub; every request on a
#: keep-alive connection from the aggregator presents the same certificate.
VERDICT_TTL = 10.0
#: Distinct certificates remembered per snapshot; the cache is emptied when it is full.
VERDICT_CACHE_SIZE = 1024


@dataclass(frozen=True, kw_only=True)
class TrustFlags:
    """What the command line says; None means "not given, ask the ConfigMap"."""

    client_ca_pem: bytes | None = None
    requestheader_ca_pem: bytes | None = None
    allowed_names: tuple[str, ...] | None = None
    username_headers: tuple[str, ...] | None = None
    group_headers: tuple[str, ...] | None = None
    extra_prefixes: tuple[str, ...] | None = None
    uid_headers: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class TrustSnapshot:
    """The trust in force at one moment."""

    client_cas: tuple[x509.Certificate, ...] = ()
    requestheader_cas: tuple[x509.Certificate, ...] = ()
    #: CNs a front-proxy certificate may have; empty = any certificate from the CA.
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = DEFAULT_USERNAME_HEADERS
    group_headers: tuple[str, ...] = DEFAULT_GROUP_HEADERS
    extra_prefixes: tuple[str, ...] = DEFAULT_EXTRA_PREFIXES
    uid_headers: tuple[str, ...] = DEFAULT_UID_HEADERS
    #: (kind, id of the certificate object) -> (that certificate, wall-clock expiry, verdict);
    #: a new snapshot starts empty, so a trust change is seen at once. Keyed by identity, not
    #: by the certificate's value: hashing a certificate walks its whole parsed structure (a
    #: microsecond, several with cold caches, on every proxied request), while the
    #: authenticator hands over the same object for the same certificate anyway. The entry
    #: holds the certificate, so its id cannot be reused while the entry exists, and a lookup
    #: checks that the object is the one the entry was made for.
    _verdicts: dict[tuple[str, int], tuple[x509.Certificate, float, str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @functools.cached_property
    def all_header_names(self) -> tuple[str, ...]:
        """Exact header names (lower case) carrying front-proxy identity."""
        names = (*self.username_headers, *self.group_headers, *self.uid_headers)
        return tuple(name.lower() for name in names)

    @functools.cached_property
    def credential_headers(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The headers no handler may pass on: exact names (lower case: ``Authorization`` and
        the identity headers) and name prefixes (the extra-identity ones). Computed once per
        snapshot, not per request: every request is stripped of them."""
        exact = frozenset({"authorization", *self.all_header_names})
        return exact, tuple(prefix.lower() for prefix in self.extra_prefixes)

    @functools.cached_property
    def extra_prefix_initials(self) -> frozenset[str] | None:
        """The first characters (lower case) of the extra-identity header prefixes: a header
        whose name starts otherwise is no extra. None when a prefix is empty (any header may
        be one)."""
        prefixes = self.credential_headers[1]
        if any(not prefix for prefix in prefixes):
            return None
        return frozenset(prefix[0] for prefix in prefixes)

    def _cached(
        self, kind: str, cert: x509.Certificate, verify: Callable[[x509.Certificate], str | None]
    ) -> str | None:
        now = time.time()
        key = (kind, id(cert))
        entry = self._verdicts.get(key)
        if entry is not None and entry[0] is cert and now < entry[1]:
            return entry[2]
        verdict = verify(cert)
        expires = min(now + VERDICT_TTL, cert.not_valid_after_utc.timestamp())
        if len(self._verdicts) >= VERDICT_CACHE_SIZE:
            self._verdicts.clear()
        self._verdicts[key] = (cert, expires, verdict)
        return verdict

    def verify_front_proxy(self, cert: x509.Certificate) -> str | None:
        """None if ``cert`` may assert X-Remote-* identities, else why not (cached briefly)."""
        return self._cached("front-proxy", cert, self._verify_front_proxy)

    def _verify_front_proxy(self, cert: x509.Certificate) -> str | None:
        if not self.requestheader_cas:
            return "no request-header CA is configured"
        problem = _verify(cert, self.requestheader_cas)
        if problem:
            return f"not a front-proxy certificate: {problem}"
        cn = common_name(cert)
        if self.allowed_names and cn not in self.allowed_names:
            return f"front-proxy certificate CN {cn!r} is not in the allowed names"
        return None

    def verify_client(self, cert: x509.Certificate) -> str | None:
        """None if ``cert`` is a user certificate from the client CA, else why not (cached
        briefly)."""
        return self._cached("client", cert, self._verify_client)

    def _verify_client(self, cert: x509.Certificate) -> str | None:
        if not self.client_cas:
            return "no client CA is configured"
        return _verify(cert, self.client_cas)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode()


def organizations(cert: x509.Certificate) -> tuple[str, ...]:
    values = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    return tuple(v.value if isinstance(v.value, str) else v.value.decode() for v in values)


def _require_client_auth(
    _policy: verification.Policy, _cert: x509.Certificate, usage: x509.ExtendedKeyUsage
) -> None:
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise ValueError("the certificate lacks the clientAuth extended key usage")


def _verify(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> str | None:
    """Chain to one of ``cas``, inside its validity, with the clientAuth usage.

    The web PKI profile of ``cryptography`` wants a subjectAltName on every leaf; kube client
    certificates have none, so it is made optional. The extended key usage, optional in Go when
    absent, is required here: every front-proxy and kubeadm client certificate carries it.
    Only the leaf is known (``ssl`` does not hand over the peer's intermediates before 3.13),
    so intermediates must be part of the CA bundle.
    """
    ee_policy = (
        verification.ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None)
        .require_present(
            x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, _require_client_auth
        )
    )
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(cas)))
        .time(datetime.datetime.now(datetime.UTC))
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, [])
    except verification.VerificationError as exc:
        return str(exc)
    return None


def _strings(data: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    """A JSON string-array ConfigMap value, as kube's ``deserializeStrings``."""
    raw = data.get(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        logger.warning("ConfigMap key %s is not a JSON array; ignoring it", key)
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        logger.warning("ConfigMap key %s is not an array of strings; ignoring it", key)
        return None
    return tuple(value)


def _bundle(pem: bytes | str | None, what: str) -> tuple[x509.Certificate, ...]:
    if not pem:
        return ()
    try:
        return tuple(tls.parse_pem_bundle(pem))
    except tls.TLSConfigError as exc:
        logger.warning("%s is not a usable CA bundle: %s", what, exc)
        return ()


def build_snapshot(flags: TrustFlags, configmap: Mapping[str, Any] | None) -> TrustSnapshot:
    """Flags first, then the ConfigMap's data, then the generic defaults."""
    data = configmap or {}

    def pick(flag: tuple[str, ...] | None, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if flag is not None:
            return flag
        from_map = _strings(data, key)
        return from_map if from_map is not None else default

    client_ca = flags.client_ca_pem or data.get("client-ca-file")
    requestheader_ca = flags.requestheader_ca_pem or data.get("requestheader-client-ca-file")
    return TrustSnapshot(
        client_cas=_bundle(client_ca, "the client CA"),
        requestheader_cas=_bundle(requestheader_ca, "the request-header CA"),
        allowed_names=pick(flags.allowed_names, "requestheader-allowed-names", ()),
        username_headers=pick(
            flags.username_headers, "requestheader-username-headers", DEFAULT_USERNAME_HEADERS
        ),
        group_headers=pick(
            flags.group_headers, "requestheader-group-headers", DEFAULT_GROUP_HEADERS
        ),
        extra_prefixes=pick(
            flags.extra_prefixes, "requestheader-extra-headers-prefix", DEFAULT_EXTRA_PREFIXES
        ),
        uid_headers=pick(flags.uid_headers, "requestheader-uid-headers", DEFAULT_UID_HEADERS),
    )


class Trust:
    """The current :class:`TrustSnapshot`, rebuilt when the ConfigMap changes."""

    def __init__(
        self,
        flags: TrustFlags,
        *,
        on_new_cas: Callable[[Sequence[x509.Certificate]], None] | None = None,
    ) -> None:
        self.flags = flags
        self.on_new_cas = on_new_cas
        #: Whether the ConfigMap has been read at least once (or is not needed).
        self.configmap_seen = False
        self.snapshot = build_snapshot(flags, None)

    @property
    def needs_configmap(self) -> bool:
        """False when the flags name both CAs: nothing is left to look up."""
        return self.flags.client_ca_pem is None or self.flags.requestheader_ca_pem is None

    def update(self, configmap_data: Mapping[str, Any] | None) -> None:
        """Apply the ConfigMap's data (None: it was deleted) and tell TLS about new CAs."""
        self.snapshot = build_snapshot(self.flags, configmap_data)
        self.configmap_seen = True
        if self.on_new_cas is not None:
            self.on_new_cas([*self.snapshot.client_cas, *self.snapshot.requestheader_cas])
        logger.info(
            "authentication trust updated: %d client CA(s), %d request-header CA(s), "
            "allowed names %s",
            len(self.snapshot.client_cas),
            len(self.snapshot.requestheader_cas),
            list(self.snapshot.allowed_names) or "any",
        )

    def on_configmap_event(self, kind: str, obj: dict[str, Any]) -> None:
        """Informer callback; the informer watches only the one ConfigMap (a field selector)."""
        self.update(None if kind == "DELETED" else (obj.get("data") or {}))
