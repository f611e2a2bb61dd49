"""The aggregation layer's proxy: kubesim relays a request to an extension server as kube does.

This mirrors ``kube-aggregator``'s ``handler_proxy.go`` and apimachinery's
``UpgradeAwareHandler``: the caller has been authenticated, impersonated and authorized by
kubesim; the extension server sees kubesim's front-proxy client certificate and the resulting
identity in ``X-Remote-*`` headers, never the caller's credentials. Responses stream through
chunk by chunk (watches, ``logs -f``); upgrades (websocket or SPDY) are relayed as raw bytes
after the backend's 101, exactly like the aggregator's hijack-and-copy, so close codes and
framing pass untouched. Error answers are the aggregator's plain-text ``http.Error`` bodies,
not Status objects, because that is what clients of a real cluster get.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from clusternet_aa.sandbox.kubesim.pki import KeyPair
from clusternet_aa.sandbox.kubesim.types import UserInfo

#: Headers that describe one connection, never forwarded by a proxy that re-originates.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: RFC 7230 token characters besides letters and digits: legal unescaped in a header name.
_TOKEN_EXTRA = frozenset("!#$&'*+-.^_`|~")
REDIRECT_REFUSED = "the backend attempted to redirect this request, which is not permitted"
#: Connect budget for a backend; kube's dialer uses 30 s, tests want failures fast anyway.
CONNECT_TIMEOUT = 10.0
#: kube-aggregator gives proxied discovery (``/apis/<g>/<v>``) a 5 s budget.
DISCOVERY_TIMEOUT = 5.0
_READ_CHUNK = 64 * 1024


def header_key_escape(key: str) -> str:
    """client-go's ``headerKeyEscape``: %-encode bytes that are not header-token bytes, and %."""
    out: list[str] = []
    for byte in key.encode():
        char = chr(byte)
        if byte < 128 and (char.isalnum() or char in _TOKEN_EXTRA):
            out.append(char)
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def identity_headers(user: UserInfo) -> list[tuple[str, str]]:
    """``transport.SetAuthProxyHeaders``: user, uid (1.33+ default), groups, extras in order."""
    headers = [("X-Remote-User", user.name)]
    if user.uid:
        headers.append(("X-Remote-Uid", user.uid))
    headers.extend(("X-Remote-Group", g) for g in user.groups)
    for key, values in user.extra.items():
        headers.extend((f"X-Remote-Extra-{header_key_escape(key)}", v) for v in values)
    return headers


def _stripped(name: str) -> bool:
    """Credentials kubesim consumed: the authn and impersonation filters delete them."""
    lowered = name.lower()
    return (
        lowered == "authorization"
        or lowered.startswith("impersonate-")
        or lowered.startswith("x-remote-")
    )


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def outgoing_headers(
    request: web.BaseRequest, user: UserInfo, *, upgrade: bool
) -> list[tuple[str, str]]:
    """The request headers an extension server gets.

    A plain request loses its hop-by-hop headers (Go's ReverseProxy); an upgrade keeps
    ``Connection`` and ``Upgrade``, since that request is written to the backend as is.
    """
    items = list(request.headers.items())
    named = _connection_tokens(items)
    headers: list[tuple[str, str]] = []
    forwarded_for = ""
    for name, value in items:
        lowered = name.lower()
        if _stripped(name) or lowered == "host":
            continue
        if lowered == "x-forwarded-for":
            forwarded_for = f"{forwarded_for}, {value}" if forwarded_for else value
            continue
        if not upgrade and (lowered in HOP_BY_HOP or lowered in named):
            continue
        headers.append((name, value))
    peer = request.remote or ""
    if peer:
        forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
    if forwarded_for:
        headers.append(("X-Forwarded-For", forwarded_for))
    headers.extend(identity_headers(user))
    return headers


def plain_error(status: int, message: str) -> web.Response:
    """Go's ``http.Error``: the aggregator's own failures are plain text, not Status JSON."""
    response = web.Response(status=status, text=message + "\n", charset="utf-8")
    response.content_type = "text/plain"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def describe_error(error: BaseException, host: str, port: int) -> str:
    """A Go-like message for a failed dial or TLS handshake (what kube's responder shows)."""
    address = f"{host}:{port}"
    if isinstance(error, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return f"tls: failed to verify certificate: {_cert_reason(error)}"
    if isinstance(error, aiohttp.ClientSSLError | ssl.SSLError):
        return f"remote error: tls: {error}"
    if isinstance(error, ConnectionRefusedError) or (
        isinstance(error, aiohttp.ClientConnectorError)
        and isinstance(error.os_error, ConnectionRefusedError)
    ):
        return f"dial tcp {address}: connect: connection refused"
    if isinstance(error, TimeoutError):
        return f"dial tcp {address}: i/o timeout"
    return f"dial tcp {address}: {error}"


def _cert_reason(error: BaseException) -> str:
    text = str(error)
    if "hostname" in text.lower() or "ip address mismatch" in text.lower():
        return f"x509: certificate is not valid for the requested name ({text})"
    return "x509: certificate signed by unknown authority"


@dataclass(frozen=True)
class Target:
    """Where one proxied request goes, and how its server certificate is checked."""

    host: str
    port: int
    server_name: str
    ca_bundle: bytes | None
    insecure: bool


class AggregationProxy:
    """Relays requests to extension servers with the front-proxy client certificate."""

    def __init__(self, front_proxy_client: KeyPair) -> None:
        self._client = front_proxy_client
        self._contexts: dict[tuple[bytes | None, bool], ssl.SSLContext] = {}
        self._sessions: dict[tuple[bytes | None, bool, str], aiohttp.ClientSession] = {}

    def ssl_context(self, ca_bundle: bytes | None, insecure: bool) -> ssl.SSLContext:
        """Verify against ``caBundle`` (system roots without one) unless told not to."""
        key = (ca_bundle, insecure)
        context = self._contexts.get(key)
        if context is not None:
            return context
        if insecure:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_bundle:
            context = ssl.create_default_context(cadata=ca_bundle.decode(errors="replace"))
        else:
            context = ssl.create_default_context()
        with tempfile.TemporaryDirectory() as tmp:
            cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert_file.write_bytes(self._client.cert_pem)
            key_file.write_bytes(self._client.key_pem)
            context.load_cert_chain(cert_file, key_file)
        self._contexts[key] = context
        return context

    def session(self, target: Target) -> aiohttp.ClientSession:
        key = (target.ca_bundle, target.insecure, target.server_name)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context(target.ca_bundle, target.insecure), limit=0
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    # -- plain requests --------------------------------------------------------------------

    async def forward(
        self, request: web.Request, user: UserInfo, target: Target, *, discovery: bool = False
    ) -> web.StreamResponse:
        """Relay ``request``; an upgrade request goes through :meth:`upgrade` instead."""
        if is_upgrade(request):
            return await self.upgrade(request, user, target)
        url = URL(f"https://{_host_port(target.host, target.port)}{request.raw_path}", encoded=True)
        headers = outgoing_headers(request, user, upgrade=False)
        timeout = aiohttp.ClientTimeout(
            total=DISCOVERY_TIMEOUT if discovery else None,
            sock_connect=CONNECT_TIMEOUT,
            sock_read=None,
        )
        data = request.content.iter_any() if request.body_exists else None
        try:
            upstream_cm = self.session(target).request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout,
                server_hostname=target.server_name,
            )
            upstream = await upstream_cm.__aenter__()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            return plain_error(503, describe_error(e, target.host, target.port))
        try:
            return await self._relay_response(request, upstream)
        finally:
            await upstream_cm.__aexit__(None, None, None)

    async def _relay_response(
        self, request: web.Request, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        if 300 <= upstream.status < 400 and upstream.headers.get("Location"):
            # kube's RejectForwardingRedirects: never follow, never pass a redirect on.
            refused = web.Response(status=502, text=REDIRECT_REFUSED)
            refused.content_type = "text/plain"
            return refused
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        raw = list(upstream.headers.items())
        named = _connection_tokens(raw)
        for name, value in raw:
            if name.lower() in HOP_BY_HOP or name.lower() in named:
                continue
            response.headers.add(name, value)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, TimeoutError):
            # Go's ReverseProxy aborts the client connection, so the client sees a truncated
            # body, not a clean end (a watch must not look finished).
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response

    # -- upgrades ----------------------------------------------------------------------------

    async def upgrade(
        self, request: web.Request, user: UserInfo, target: Target
    ) -> web.StreamResponse:
        """Dial, write the request, read the answer head; on 101 splice the two connections."""
        context = self.ssl_context(target.ca_bundle, target.insecure)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, ssl=context, server_hostname=target.server_name
                )
        except (OSError, TimeoutError, ssl.SSLError) as e:
            return plain_error(503, describe_error(e, target.host, target.port))
        try:
            body = await request.read() if request.body_exists else b""
            head = [f"{request.method} {request.raw_path} HTTP/1.1"]
            head.append(f"Host: {_host_port(target.host, target.port)}")
            headers = outgoing_headers(request, user, upgrade=True)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            if body:
                headers.append(("Content-Length", str(len(body))))
            head.extend(f"{k}: {v}" for k, v in headers)
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            status, reason, answer_headers = await _read_head(reader)
        except (OSError, ValueError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            writer.close()
            return plain_error(503, f"error reading upgrade response: {e}")
        if status != 101 and status < 400:
            writer.close()
            return plain_error(503, f"invalid upgrade response: status code {status}")
        if status != 101:
            try:
                async with asyncio.timeout(10):
                    payload = await _read_body(reader, answer_headers)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                payload = b""
            finally:
                writer.close()
            refused = web.Response(status=status, reason=reason, body=payload)
            for name, value in answer_headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    refused.headers.add(name, value)
            return refused
        return await _splice(request, status, reason, answer_headers, reader, writer)


def is_upgrade(request: web.BaseRequest) -> bool:
    """``httpstream.IsUpgradeRequest``: a ``Connection`` header that lists ``upgrade``."""
    return "upgrade" in _connection_tokens(request.headers.items())


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"malformed HTTP response {lines[0]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    values = {k.lower(): v for k, v in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in values:
        return await reader.readexactly(int(values["content-length"]))
    return await reader.read()


class _RawFeed:
    """Takes the client connection's bytes after the 101 (aiohttp's payload-parser slot)."""

    def __init__(self, sink: asyncio.StreamReader) -> None:
        self._sink = sink

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._sink.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self._sink.feed_eof()


async def _splice(
    request: web.Request,
    status: int,
    reason: str,
    headers: list[tuple[str, str]],
    backend_reader: asyncio.StreamReader,
    backend_writer: asyncio.StreamWriter,
) -> web.StreamResponse:
    """Answer the client with the backend's 101, then copy bytes both ways until one side ends."""
    transport = request.transport
    if transport is None:
        backend_writer.close()
        raise ConnectionResetError("client went away before the upgrade")
    response = web.StreamResponse(status=status, reason=reason)
    for name, value in headers:
        response.headers.add(name, value)
    response.force_close()
    client_reader = asyncio.StreamReader(limit=_READ_CHUNK)
    client_reader.set_transport(transport)
    request.protocol.set_parser(_RawFeed(client_reader))  # type: ignore[arg-type]
    await response.prepare(request)

    async def to_backend() -> None:
        while data := await client_reader.read(_READ_CHUNK):
            backend_writer.write(data)
            await backend_writer.drain()

    async def to_client() -> None:
        while data := await backend_reader.read(_READ_CHUNK):
            await response.write(data)

    tasks = [asyncio.create_task(to_backend()), asyncio.create_task(to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        backend_writer.close()
        with contextlib.suppress(Exception):
            await backend_writer.wait_closed()
    return response
