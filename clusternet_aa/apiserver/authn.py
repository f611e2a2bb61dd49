"""Who is calling: front-proxy headers, client certificates, bearer tokens, or nobody.

The order is kube's: request-header (the aggregator asserting the parent's user) first, then an
x509 user certificate, then a bearer token reviewed by the parent (TokenReview). A request none
of them vouches for gets 401, except on the public paths below, which kube-apiserver serves to
``system:anonymous`` through its default ``system:public-info-viewer`` and ``system:discovery``
bindings; the hub serves them to anonymous callers so that kubelet probes, Prometheus scrapes
and discovery work without credentials. Credentials that are *presented* and fail (a bad token)
are 401 even there, as in kube.

``X-Remote-*`` headers from a connection without a valid front-proxy certificate are ignored,
never trusted; after authentication they and ``Authorization`` are removed from the request the
handlers see, so nothing downstream can forward them by mistake. A handler that builds the
headers it passes on in a single pass of its own (the proxy's forwarder) is declared with
:func:`filters_credentials`: it gets the names to drop instead of a copy of the request, which
costs more than the rest of authentication on a proxied request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from multidict import CIMultiDict, CIMultiDictProxy

from clusternet_aa.apiserver import tls
from clusternet_aa.apiserver.caching import SingleFlight, TTLCache
from clusternet_aa.apiserver.status import StatusError, checked_response, error_response
from clusternet_aa.apiserver.trust import Trust, TrustSnapshot, common_name, organizations
from clusternet_aa.identity import REQUEST_USER_KEY, UserInfo
from clusternet_aa.kube import errors as kube_errors
from clusternet_aa.kube.client import KubeClient

logger = logging.getLogger(__name__)

ANONYMOUS = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
AUTHENTICATED_GROUP = "system:authenticated"

#: Exact paths anonymous callers may read (health, version, metrics, OpenAPI, discovery).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/version/",
        "/metrics",
        "/openapi/v2",
        "/openapi/v3",
        "/apis",
        "/apis/",
        "/apis/proxies.clusternet.io",
        "/apis/proxies.clusternet.io/",
        "/apis/proxies.clusternet.io/v1alpha1",
        "/apis/proxies.clusternet.io/v1alpha1/",
    }
)
#: Prefixes anonymous callers may read below (individual health checks, OpenAPI v3 parts).
PUBLIC_PREFIXES = ("/healthz/", "/livez/", "/readyz/", "/openapi/v3/")

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: Parsed client certificates kept by their DER bytes (the aggregator presents one certificate
#: on every request; parsing it each time was the largest part of authentication).
_CERT_CACHE_SIZE = 256
#: "No entry yet" in the per-connection certificate memo (None is a valid entry there).
_UNSEEN = object()


#: Exact header names (lower case) and name prefixes that carry credentials.
CredentialHeaders = tuple[frozenset[str], tuple[str, ...]]
#: On requests to handlers declared with :func:`filters_credentials`: the credential headers
#: the handler must drop from what it passes on (their request is not copied without them).
CREDENTIAL_HEADERS_KEY = web.RequestKey[CredentialHeaders]("clusternet.credential_headers")

_F = TypeVar("_F", bound=Callable[..., Any])
#: Handler functions declared with :func:`filters_credentials`.
_SELF_FILTERING: set[Callable[..., Any]] = set()


def filters_credentials(handler: _F) -> _F:
    """Declare that ``handler`` (a function, or a method as defined in its class) passes on no
    header from ``request.headers`` but those that survive ``request[CREDENTIAL_HEADERS_KEY]``,
    and reads no credential header itself. The authentication middleware then hands it the
    request as it came instead of a copy without those headers (``Request.clone``: a new
    request object and header map on every request)."""
    _SELF_FILTERING.add(handler)
    return handler


def is_public_path(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _with_authenticated_group(user: UserInfo) -> UserInfo:
    """kube's AuthenticatedGroupAdder: every authenticated user is in system:authenticated."""
    if AUTHENTICATED_GROUP in user.groups or "system:unauthenticated" in user.groups:
        return user
    return UserInfo(
        name=user.name, uid=user.uid, groups=(*user.groups, AUTHENTICATED_GROUP), extra=user.extra
    )


def user_from_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], snapshot: TrustSnapshot
) -> UserInfo | None:
    """The identity a trusted front proxy asserts, or None when it names no user."""
    return _asserted_user(headers, snapshot, authenticated=False)


def _asserted_user(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    snapshot: TrustSnapshot,
    *,
    authenticated: bool,
) -> UserInfo | None:
    """:func:`user_from_headers`, with ``system:authenticated`` added when ``authenticated``
    (what :func:`_with_authenticated_group` would do, without building the user twice)."""
    # Plain loops rather than generator expressions: this runs on every proxied request.
    name = ""
    for header in snapshot.username_headers:
        name = headers.get(header, "")
        if name:
            break
    if not name:
        return None
    groups: tuple[str, ...] = ()
    for header in snapshot.group_headers:
        groups += tuple(headers.getall(header, ()))
    if (
        authenticated
        and AUTHENTICATED_GROUP not in groups
        and "system:unauthenticated" not in groups
    ):
        groups += (AUTHENTICATED_GROUP,)
    uid = ""
    for header in snapshot.uid_headers:
        uid = headers.get(header, "")
        if uid:
            break
    extra: dict[str, list[str]] = {}
    prefixes = snapshot.credential_headers[1]
    initials = snapshot.extra_prefix_initials
    for header, value in headers.items():
        # Most headers are not extras: one character decides for them without lower-casing
        # the whole name (None: some prefix is empty, every header must be looked at). The
        # first character of ``header.lower()`` is always that of ``header[:1].lower()``.
        if initials is not None and header[:1].lower()[:1] not in initials:
            continue
        lowered = header.lower()
        if not lowered.startswith(prefixes):
            continue
        prefix = next(p for p in prefixes if lowered.startswith(p))
        key = lowered[len(prefix) :]
        if not key or _BAD_ESCAPE.search(key):
            logger.debug("ignoring front-proxy extra header %r: bad escape", header)
            continue
        extra.setdefault(unquote(key), []).append(value)
    return UserInfo(
        name=name,
        uid=uid,
        groups=groups,
        extra={key: tuple(values) for key, values in extra.items()} if extra else {},
    )


class TokenReviewer:
    """Bearer tokens reviewed by the parent's TokenReview API, answers cached briefly."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        audiences: tuple[str, ...] = (),
        success_ttl: float = 10.0,
        failure_ttl: float = 5.0,
        cache_size: int = 4096,
    ) -> None:
        self.kube = kube
        self.audiences = audiences
        self.success_ttl = success_ttl
        self.failure_ttl = failure_ttl
        self.cache: TTLCache[str, UserInfo | None] = TTLCache(cache_size)
        self._inflight: SingleFlight[str, UserInfo | None] = SingleFlight()
        #: TokenReviews sent to the parent (cache misses).
        self.reviews = 0

    async def review(self, token: str) -> UserInfo | None:
        """The user behind ``token``, None if the parent says it is not valid.

        Raises :class:`kube_errors.KubeError` when the parent cannot be asked; that is not
        cached, so the next request asks again.
        """
        key = hashlib.sha256(token.encode()).hexdigest()
        hit, cached = self.cache.get(key)
        if hit:
            return cached
        return await self._inflight.do(key, lambda: self._review(key, token))

    async def _review(self, key: str, token: str) -> UserInfo | None:
        spec: dict[str, object] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        self.reviews += 1
        answer = await self.kube.request(
            "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body=body, request_timeout=10.0
        )
        status = answer.get("status") or {}
        user: UserInfo | None = None
        if status.get("authenticated") is True:
            raw = status.get("user") or {}
            extra = raw.get("extra") or {}
            user = UserInfo(
                name=str(raw.get("username") or ""),
                uid=str(raw.get("uid") or ""),
                groups=tuple(str(g) for g in raw.get("groups") or ()),
                extra={str(k).lower(): tuple(str(v) for v in vs or ()) for k, vs in extra.items()},
            )
            if not user.name:
                user = None
        self.cache.put(key, user, self.success_ttl if user else self.failure_ttl)
        return user


class Authenticator:
    """Turns a request into a :class:`UserInfo` (or None for no usable credentials)."""

    def __init__(self, trust: Trust, tokens: TokenReviewer | None) -> None:
        self.trust = trust
        self.tokens = tokens
        self._certs: dict[bytes, x509.Certificate] = {}
        #: The client certificate of each live TLS connection (None: it sent none), dropped
        #: with the connection's SSL object.
        self._by_connection: weakref.WeakKeyDictionary[Any, x509.Certificate | None] = (
            weakref.WeakKeyDictionary()
        )

    def peer_certificate(self, request: web.BaseRequest) -> x509.Certificate | None:
        """:func:`tls.peer_certificate`, looked up once per connection and parsed once per
        distinct certificate.

        A connection's client certificate cannot change: the hub's TLS server refuses
        renegotiation (``tls.server_context``), as Go's does. So the certificate is remembered
        per connection; fetching it from OpenSSL (DER-encoding it again) and finding it by its
        bytes cost more than the rest of a front-proxy authentication. The same DER bytes
        always parse to the same certificate, and the trust verdicts are cached per
        certificate object in the snapshot, so reusing the object also makes those lookups
        cheaper; nothing about trust is cached here.
        """
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if ssl_object is None:
            return tls.peer_certificate(request)
        try:
            known = self._by_connection.get(ssl_object, _UNSEEN)
        except TypeError:  # an SSL object without weak references: no memo
            known = _UNSEEN
        if known is not _UNSEEN:
            return cast("x509.Certificate | None", known)
        der: bytes | None = ssl_object.getpeercert(binary_form=True)
        cert: x509.Certificate | None = None
        if der:
            cert = self._certs.get(der)
            if cert is None:
                cert = x509.load_der_x509_certificate(der)
                if len(self._certs) >= _CERT_CACHE_SIZE:
                    self._certs.clear()
                self._certs[der] = cert
        with contextlib.suppress(TypeError):
            self._by_connection[ssl_object] = cert
        return cert

    async def authenticate(self, request: web.BaseRequest) -> UserInfo | None:
        """The caller, None when it presented nothing usable; 401 StatusError for bad tokens."""
        snapshot = self.trust.snapshot
        cert = self.peer_certificate(request)
        if cert is not None:
            problem = snapshot.verify_front_proxy(cert)
            if problem is None:
                user = _asserted_user(request.headers, snapshot, authenticated=True)
                if user is not None:
                    return user
            elif any(h in request.headers for h in snapshot.all_header_names):
                logger.info("ignoring X-Remote-* headers from %s: %s", request.remote, problem)
            if snapshot.verify_client(cert) is None:
                user = UserInfo(name=common_name(cert), groups=organizations(cert))
                if user.name:
                    return _with_authenticated_group(user)
        token = _bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            return None
        if self.tokens is None:
            raise StatusError(401, "Unauthorized")
        try:
            user = await self.tokens.review(token)
        except kube_errors.KubeError as exc:
            logger.warning("TokenReview against the parent failed: %s", exc)
            raise StatusError(401, "Unauthorized") from exc
        if user is None:
            raise StatusError(401, "Unauthorized")
        return _with_authenticated_group(user)

    def strip_credentials(self, request: web.Request) -> web.Request:
        """A view of ``request`` without Authorization and front-proxy identity headers."""
        exact, prefixes = self.trust.snapshot.credential_headers
        kept: CIMultiDict[str] = CIMultiDict()
        removed = False
        for header, value in request.headers.items():
            lowered = header.lower()
            if lowered in exact or lowered.startswith(prefixes):
                removed = True
                continue
            kept.add(header, value)
        return request.clone(headers=kept) if removed else request

    def without_credentials(self, request: web.Request) -> web.Request:
        """What the handler gets: ``request`` marked with the credential headers when its
        handler drops them itself (:func:`filters_credentials`), else a stripped copy."""
        handler = request.match_info.handler
        if getattr(handler, "__func__", handler) in _SELF_FILTERING:
            request[CREDENTIAL_HEADERS_KEY] = self.trust.snapshot.credential_headers
            return request
        return self.strip_credentials(request)


def _bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _for_handler(
    authenticator: Authenticator, request: web.Request, user: UserInfo | None
) -> web.Request:
    """The request the handler gets: its caller set, credentials gone; 401 StatusError for an
    unauthenticated request to a non-public path."""
    if user is None:
        if not is_public_path(request.path):
            raise StatusError(401, "Unauthorized")
        user = ANONYMOUS
    request = authenticator.without_credentials(request)
    request[REQUEST_USER_KEY] = user
    return request


def api_middleware(authenticator: Authenticator) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Authentication inside Status rendering, as one middleware: sets
    ``request[REQUEST_USER_KEY]``, answers 401 for an unauthenticated non-public request, and
    renders every error as a Status (``status.error_response``) and refuses redirects.

    One layer rather than two (``status_middleware`` outside an authentication middleware):
    each middleware is a coroutine frame and a call on every request.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await authenticator.authenticate(request)
            response = await handler(_for_handler(authenticator, request, user))
        except Exception as exc:  # noqa: BLE001 - the edge: error_response logs the unexpected
            return error_response(request, exc)
        return checked_response(response)

    return middleware
