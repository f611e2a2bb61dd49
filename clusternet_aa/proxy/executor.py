"""Agent side of the proxy: turn tunnel streams into requests to the child's API server.

For each HTTP stream the hub opens, the executor calls the child's API server (or another
allowed target) with the agent's own credentials plus impersonation of the mapped parent
identity, and streams the answer back. Plain requests go through the lean pooled HTTP/1.1 client
of :mod:`child_client` (keep-alive, httptools parsing, body chunks straight into the stream), so
there is no TCP or TLS handshake per request and little Python per request: the request head
after its request line is rendered once per caller headers, identity and agent token and then
taken from a cache, so a repeated caller costs a dict lookup instead of filtering, checking and
rendering its headers again. Upgrades (exec, attach, port-forward, over websocket or SPDY) use a
raw HTTP/1.1 connection driven by h11: after the child's 101, bytes are copied both ways
untouched, so websocket close codes and SPDY frames arrive exactly as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from yarl import URL

from clusternet_aa.identity import METADATA_KEY, UserInfo
from clusternet_aa.proxy import headers as hop
from clusternet_aa.proxy import identity_mapping
from clusternet_aa.proxy.child_client import (
    BODYLESS_METHODS,
    CONTENT_LENGTH_KEY,
    ChildClient,
    Origin,
    request_tail,
)
from clusternet_aa.proxy.dialer import Dialer, DialPolicy
from clusternet_aa.tunnel import relay
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream

logger = logging.getLogger(__name__)

#: OPEN metadata keys the hub sets for HTTP streams.
TARGET_KEY = "target"
UPGRADE_KEY = "upgrade"
BODY_KEY = "body"
__all__ = [
    "BODY_KEY",
    "CONTENT_LENGTH_KEY",
    "TARGET_KEY",
    "UPGRADE_KEY",
    "ChildApiserver",
    "Executor",
]

_MAX_RESPONSE_HEAD = 64 * 1024
#: The hub's target metadata for the agent's own API server.
_DIRECT = {"kind": "direct"}
#: Idle keep-alive connections kept per origin (connections in use are not limited: each
#: watch holds one).
MAX_IDLE_CONNECTIONS = 32


@dataclass(frozen=True, kw_only=True)
class ChildApiserver:
    """How the agent reaches its own cluster's API server."""

    url: str
    #: Verifies the child's serving certificate (and may carry a client certificate).
    ssl_context: ssl.SSLContext | None = None
    #: The agent's bearer token, read on every request so rotated tokens are picked up.
    token: Callable[[], str | None] = lambda: None

    @property
    def address(self) -> str:
        url = URL(self.url)
        return f"{url.host}:{url.port}"


@dataclass(frozen=True)
class _Target:
    base: URL
    ssl_context: ssl.SSLContext | None
    #: Whether to send the agent's credentials and impersonation (only to its own apiserver).
    own_apiserver: bool

    @property
    def prefix(self) -> str:
        """The base URL without its trailing slash, to which request paths are appended."""
        return str(self.base).rstrip("/")

    @property
    def path_prefix(self) -> str:
        """The base URL's path without its trailing slash: the request target's start."""
        return self.base.raw_path.rstrip("/")

    def origin(self, ssl_context: ssl.SSLContext | None, default: ssl.SSLContext) -> Origin:
        """The pool key: scheme, host, port and the TLS context the connection uses."""
        https = self.base.scheme == "https"
        return Origin(
            host=self.base.host or "",
            port=self.base.port or (443 if https else 80),
            ssl_context=(ssl_context or default) if https else None,
            authority=self.base.raw_authority,
        )


class Executor:
    """Tunnel stream handler of the agent: HTTP streams to the child, dial streams to sockets."""

    def __init__(
        self,
        child: ChildApiserver,
        *,
        identity_policy: identity_mapping.IdentityPolicy | None = None,
        dial_policy: DialPolicy | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._child = child
        self._policy = identity_policy or identity_mapping.IdentityPolicy()
        own = child.address
        self._dial_policy: DialPolicy = dial_policy or (
            lambda target: target.network == "tcp" and target.address == own
        )
        self._dialer = Dialer(self._dial_policy, connect_timeout=connect_timeout)
        #: The own API server's target and URL prefix, parsed once rather than per request.
        self._own = _Target(URL(child.url), child.ssl_context, own_apiserver=True)
        self._own_prefix = self._own.prefix
        self._own_path_prefix = self._own.path_prefix
        #: Verifies url targets and an own API server given without a TLS context, as
        #: aiohttp's ``ssl=True`` did (system trust, ``SSL_CERT_FILE``).
        self._default_tls = ssl.create_default_context()
        self._own_origin = self._own.origin(child.ssl_context, self._default_tls)
        self._connect_timeout = connect_timeout
        self._client: ChildClient | None = None
        self._cert_contexts: dict[tuple[bytes, bytes], ssl.SSLContext] = {}
        #: Impersonation headers per parent identity (the policy is fixed for the executor's
        #: life): parsing, mapping and rendering the identity was a fifth of the agent's own
        #: work per request, and a child sees the same few callers over and over.
        self._impersonation: dict[_IdentityKey, tuple[tuple[str, str], ...]] = {}
        #: Rendered request heads (after the request line) and their chunked flag, per caller
        #: headers, identity and agent token: filtering the caller's headers, checking them
        #: and rendering the head was most of the executor's own work per request, and at a
        #: given moment a child sees the same few callers over and over. Only impersonated
        #: requests to the own API server are kept (never carried child credentials).
        self._heads: dict[_HeadKey, tuple[bytes, bool]] = {}
        #: The last request that took its head from the cache, as a one-entry memo in front
        #: of it: its caller headers, identity (in the hub's form, rebuilt by us from the
        #: checked key: never an object someone else holds), token, body flags and head. A
        #: request equal in all of them has the same key, and comparing costs less than
        #: making the key (checking the identity's shape, hashing the fresh strings).
        self._last_head: _LastHead | None = None
        #: TCP connections the pool has opened; pooling shows as a number far below requests.
        self.connections_opened = 0

    async def __aenter__(self) -> Executor:
        self._client = ChildClient(
            connect_timeout=self._connect_timeout,
            max_idle=MAX_IDLE_CONNECTIONS,
            on_connect=self._count_connection,
        )
        return self

    def _count_connection(self) -> None:
        self.connections_opened += 1

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __call__(self, stream: TunnelStream) -> None:
        head = stream.target
        if isinstance(head, frames.DialTarget):
            await self._dialer(stream)
            return
        metadata = stream.metadata
        method, path = head.method, head.path
        has_body = bool(metadata.get(BODY_KEY))
        upgrade = metadata.get(UPGRADE_KEY)
        key: _HeadKey | None = None
        prepared: tuple[bytes, bool] | None = None
        # Set when the head is not in the cache: what goes into rendering it.
        out_headers: list[tuple[str, str]] = []
        ssl_context: ssl.SSLContext | None = None
        cacheable = False
        try:
            target_metadata = metadata.get(TARGET_KEY)
            # The hub names the own API server this way on nearly every request.
            if target_metadata is None or target_metadata == _DIRECT:
                target = self._own
            else:
                target = self._resolve(target_metadata)
            _check_request_line(method, path)
            identity_key: _IdentityKey | None = None
            token: str | None = None
            if target is self._own:
                identity = metadata.get(METADATA_KEY)
                token = self._child.token()
                bodyless = method in BODYLESS_METHODS
                last = self._last_head
                if (
                    last is not None
                    and not upgrade
                    and last[0] == head.headers
                    # Ours on the left (see _remember_last).
                    and last[1] == identity
                    and last[2] == token
                    and last[3] is has_body
                    and last[4] is bodyless
                ):
                    prepared = last[5]
                else:
                    identity_key = _identity_key(identity)
                    if identity_key is not None and not upgrade:
                        key = (head.headers, identity_key, token, has_body, bodyless)
                        prepared = self._heads.get(key)
                        if prepared is not None:
                            self._remember_last(key, prepared)
            if prepared is None:
                out_headers, ssl_context, cacheable = self._credentials(
                    target, metadata, head, identity_key, token
                )
                _check_headers(out_headers)
        except PermissionError as exc:
            stream.reset(ErrorCode.FORBIDDEN, str(exc))
            return
        except ValueError as exc:
            stream.reset(ErrorCode.PROTOCOL_ERROR, str(exc)[:200])
            return
        if prepared is not None:
            origin, path = self._own_origin, self._own_path_prefix + path
        elif upgrade:
            prefix = self._own_prefix if target is self._own else target.prefix
            url = URL(prefix + path, encoded=True)
            await self._upgrade(stream, method, url, out_headers, ssl_context)
            return
        else:
            if target is self._own and ssl_context is self._own.ssl_context:
                origin, path = self._own_origin, self._own_path_prefix + path
            else:
                origin = target.origin(ssl_context, self._default_tls)
                path = target.path_prefix + path
            prepared = request_tail(
                origin.authority,
                out_headers,
                has_body=has_body,
                bodyless=method in BODYLESS_METHODS,
            )
            if cacheable and key is not None and origin is self._own_origin:
                if len(self._heads) >= _HEAD_CACHE_SIZE:
                    self._heads.clear()
                self._heads[key] = prepared
                self._remember_last(key, prepared)
        tail, chunked = prepared
        assert self._client is not None, "use the executor as an async context manager"
        await self._client.forward(
            stream, origin, method, path, tail, chunked=chunked, has_body=has_body
        )

    def _remember_last(self, key: _HeadKey, prepared: tuple[bytes, bool]) -> None:
        """Keep ``key``'s request as the one-entry memo (see ``_last_head``). Its identity is
        rebuilt from the checked key in the hub's form, with exact str, list and dict types:
        a decoded identity (exact types too) equals it only when it is exactly that shape with
        the same values, which is when :func:`_identity_key` gives the same key. Ours is on
        the left of the comparison and held by nobody else, so it cannot change behind us."""
        headers, (user, uid, groups, extra), token, has_body, bodyless = key
        identity = {
            "user": user,
            "uid": uid,
            "groups": list(groups),
            "extra": {name: list(values) for name, values in extra},
        }
        self._last_head = (headers, identity, token, has_body, bodyless, prepared)

    # ------------------------------------------------------------------ request setup

    def _resolve(self, target: Any) -> _Target:
        if target is None or target == _DIRECT:
            return self._own
        if not isinstance(target, dict) or target.get("kind") != "url":
            raise ValueError(f"unknown proxy target {target!r}")
        scheme, host = target.get("scheme"), target.get("host")
        if scheme not in ("http", "https") or not isinstance(host, str):
            raise ValueError("a url target needs scheme http|https and a host")
        address = (
            host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{443 if scheme == 'https' else 80}"
        )
        if not self._dial_policy(frames.DialTarget("tcp", address)):
            raise PermissionError(f"the agent's policy does not allow {scheme}://{address}")
        if address == self._child.address:
            return self._own
        return _Target(URL(f"{scheme}://{address}"), None, own_apiserver=False)

    def _credentials(
        self,
        target: _Target,
        metadata: dict[str, Any],
        head: frames.HttpRequestHead,
        key: _IdentityKey | None,
        token: str | None,
    ) -> tuple[list[tuple[str, str]], ssl.SSLContext | None, bool]:
        """Outgoing headers (caller's, minus credentials, plus ours), the TLS context, and
        whether the headers are the same for every request with the same caller headers,
        identity and agent token (impersonation; not carried child credentials). ``key`` is
        the identity's cache key and ``token`` the agent's token, for the own API server."""
        out = [
            (name, value)
            for name, value in head.headers
            if name.lower() != "authorization"
            and not name.lower().startswith(("impersonate-", "x-remote-"))
        ]
        if not target.own_apiserver:
            return out, target.ssl_context, False
        identity = metadata.get(METADATA_KEY)
        impersonation = self._impersonation.get(key) if key is not None else None
        if impersonation is None:
            user = UserInfo.from_metadata(identity)
            carried = identity_mapping.carried_credentials(user)
            if carried is not None and carried.token:
                out.append(("Authorization", f"Bearer {carried.token}"))
                return out, target.ssl_context, False
            if carried is not None and carried.certificate_pem and carried.private_key_pem:
                context = self._client_cert_context(
                    carried.certificate_pem, carried.private_key_pem
                )
                return out, context, False
            impersonation = tuple(identity_mapping.impersonation_headers(self._policy.map(user)))
            if key is not None:
                if len(self._impersonation) >= _IMPERSONATION_CACHE_SIZE:
                    self._impersonation.clear()
                self._impersonation[key] = impersonation
        if token:
            out.append(("Authorization", f"Bearer {token}"))
        out.extend(impersonation)
        return out, target.ssl_context, True

    def _client_cert_context(self, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
        key = (cert_pem, key_pem)
        context = self._cert_contexts.get(key)
        if context is None:
            context = _context_with_client_cert(self._child.ssl_context, cert_pem, key_pem)
            if len(self._cert_contexts) > 256:
                self._cert_contexts.clear()
            self._cert_contexts[key] = context
        return context

    # ------------------------------------------------------------------ upgrades

    async def _upgrade(
        self,
        stream: TunnelStream,
        method: str,
        url: URL,
        out_headers: list[tuple[str, str]],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        host, port = url.host or "", url.port or (443 if url.scheme == "https" else 80)
        tls = (ssl_context or ssl.create_default_context()) if url.scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        except (OSError, TimeoutError) as exc:
            stream.reset(ErrorCode.DIAL_FAILED, f"child apiserver: {exc}"[:200])
            return
        try:
            await self._upgrade_on(stream, reader, writer, method, url, out_headers)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _upgrade_on(
        self,
        stream: TunnelStream,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        url: URL,
        out_headers: list[tuple[str, str]],
    ) -> None:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_RESPONSE_HEAD)
        request_headers = [("Host", url.raw_authority), *out_headers]
        if hop.content_length(out_headers) is None:
            request_headers.append(("Content-Length", "0"))
        try:
            writer.write(
                conn.send(
                    h11.Request(method=method, target=url.raw_path_qs, headers=request_headers)
                )
            )
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await writer.drain()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    await self._switched(stream, conn, reader, writer, event)
                    return
                if isinstance(event, h11.Response):
                    await self._refused(stream, conn, reader, event)
                    return
                if isinstance(event, h11.ConnectionClosed):
                    raise h11.RemoteProtocolError("child closed before answering")
        except StreamResetError:
            return
        except (h11.ProtocolError, OSError) as exc:
            stream.reset(ErrorCode.DIAL_FAILED, f"child apiserver upgrade: {exc}"[:200])

    async def _switched(
        self,
        stream: TunnelStream,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        event: h11.InformationalResponse,
    ) -> None:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
        stream.send_headers(101, hop.forwardable_response_headers(raw, switching=True))
        leftover, _closed = conn.trailing_data
        if leftover:
            stream.write(bytes(leftover))
        await relay.relay(stream, reader, writer)

    async def _refused(
        self,
        stream: TunnelStream,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        event: h11.Response,
    ) -> None:
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
        stream.send_headers(event.status_code, hop.forwardable_response_headers(raw))
        while True:
            item = conn.next_event()
            if item is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(item, h11.Data):
                await stream.write_all(bytes(item.data))
                continue
            break
        stream.write_eof()


#: An identity as OPEN metadata carries it, in hashable form (see :func:`_identity_key`).
_IdentityKey = tuple[str, str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]
_IMPERSONATION_CACHE_SIZE = 1024
#: A rendered request head tail (see :func:`~clusternet_aa.proxy.child_client.request_tail`)
#: is the same for every request with the same caller headers, identity, agent token, body
#: flag and bodyless-method flag: the key of the executor's head cache.
_HeadKey = tuple[frames.Headers, _IdentityKey, str | None, bool, bool]
#: See ``Executor._last_head``.
_LastHead = tuple[frames.Headers, dict[str, Any], str | None, bool, bool, tuple[bytes, bool]]
_HEAD_CACHE_SIZE = 1024


_IDENTITY_FIELDS = frozenset({"user", "uid", "groups", "extra"})
_NO_GROUPS: list[str] = []
_NO_EXTRA: dict[str, list[str]] = {}


def _identity_key(value: Any) -> _IdentityKey | None:
    """A cache key for the identity in OPEN metadata, or None when it is not exactly the
    well-formed shape (then the full parse runs and reports the problem). Types are checked
    exactly, so that no malformed identity can share a key with a well-formed one; identities
    carrying child credentials are never cached (they take another path before caching).
    Runs on every request: plain loops (no generator per check) and shared defaults."""
    if not isinstance(value, dict) or not _IDENTITY_FIELDS.issuperset(value):
        return None
    user, uid = value.get("user"), value.get("uid", "")
    groups, extra = value.get("groups", _NO_GROUPS), value.get("extra", _NO_EXTRA)
    if type(user) is not str or type(uid) is not str or type(groups) is not list:
        return None
    if type(extra) is not dict:
        return None
    for group in groups:
        if type(group) is not str:
            return None
    if not extra:
        return user, uid, tuple(groups), ()
    items: list[tuple[str, tuple[str, ...]]] = []
    for name, values in extra.items():
        if type(name) is not str or type(values) is not list:
            return None
        for item in values:
            if type(item) is not str:
                return None
        items.append((name, tuple(values)))
    return user, uid, tuple(groups), tuple(items)


#: Bytes that must never reach a request line or a header: they would end it early.
_LINE_BREAKERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: An HTTP method is a token (RFC 9110 §9.1).
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


#: Methods known to be tokens: checked by a set lookup instead of the pattern.
_TOKEN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _check_request_line(method: str, path: str) -> None:
    """Refuse what the hub should never send: a method that is not a token or a path that
    does not start with ``/`` (the target URL is base + path, so ``@host/`` would name another
    host) or contains spaces or control characters. The request head is written as given, so
    this and :func:`_check_headers` are what keep a hostile stream from smuggling a second
    request to the child. A printable path has no control character (they are all
    non-printable), so the pattern runs only for the others (a tab, non-ASCII)."""
    if method not in _TOKEN_METHODS and not _METHOD.match(method):
        raise ValueError(f"refusing request method {method[:20]!r}")
    if (
        not path.startswith("/")
        or " " in path
        or (not path.isprintable() and _LINE_BREAKERS.search(path))
    ):
        raise ValueError(f"refusing request path {path[:100]!r}")


def _check_headers(headers: list[tuple[str, str]]) -> None:
    """Refuse header names or values (identities included) with line breaks, and names with
    a colon. Runs when a request head is rendered; a head taken from the executor's cache was
    rendered from these same headers, so it passed."""
    # One search over all names and values; the loop below only names the culprit.
    if not _LINE_BREAKERS.search("".join(itertools.chain.from_iterable(headers))) and not any(
        ":" in name for name, _ in headers
    ):
        return
    for name, value in headers:
        if _LINE_BREAKERS.search(name) or _LINE_BREAKERS.search(value) or ":" in name:
            raise ValueError(f"refusing header {name[:100]!r}: control characters")


def _context_with_client_cert(
    base: ssl.SSLContext | None, cert_pem: bytes, key_pem: bytes
) -> ssl.SSLContext:
    """A TLS context like ``base`` that presents the given client certificate."""
    context = ssl.create_default_context()
    if base is not None and base.verify_mode == ssl.CERT_NONE:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif base is not None:
        certs = base.get_ca_certs(binary_form=True)
        if certs:
            context.load_verify_locations(
                cadata=b"".join(ssl.DER_cert_to_PEM_cert(c).encode() for c in certs).decode()
            )
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context
