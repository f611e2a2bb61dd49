"""Hub side of the proxy: ``sockets/<cluster-id>/proxy/...`` requests, forwarded over tunnels.

The caller is already authenticated (the API server's middleware put a UserInfo on the
request). Here we authorize ``sockets/proxy`` on the cluster id, pick the cluster's tunnel, and
open one stream per request carrying the request head and the caller's identity. Bodies stream
both ways without buffering; upgrades (exec, attach, port-forward) switch to a raw byte relay
after the child's 101, so every websocket and SPDY frame, close codes included, arrives as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from clusternet_aa.apiserver.authn import CREDENTIAL_HEADERS_KEY, filters_credentials
from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.identity import METADATA_KEY, REQUEST_USER_KEY, UserInfo
from clusternet_aa.proxy import headers as hop
from clusternet_aa.proxy import hijack
from clusternet_aa.proxy.executor import BODY_KEY, CONTENT_LENGTH_KEY, TARGET_KEY, UPGRADE_KEY
from clusternet_aa.proxy.ports import GROUP, VERSION, Authorizer, ClusterDirectory, ProxyMetrics
from clusternet_aa.proxy.tunnels import TunnelRegistry
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode, LocalProtocolError, TunnelError
from clusternet_aa.tunnel.streams import ResponseHead, StreamResetError, TunnelStream

logger = logging.getLogger(__name__)

SOCKETS_PREFIX = f"/apis/{GROUP}/{VERSION}/sockets/"

#: Bytes taken from a stream per write to the client. Writing a whole stream window at once
#: would park it in the client's socket buffers (plain and encrypted) when the client stalls;
#: small writes leave the rest unread in the stream, where its window bounds it.
_WRITE_CHUNK = 64 * 1024

VERBS = {
    "GET": "get",
    "HEAD": "get",
    "OPTIONS": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

#: Cluster ids are Lease UIDs in practice; allow DNS-1123 subdomain characters.
_CLUSTER_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
#: Raw path fragments that could walk out of ``proxy/direct`` or smuggle a separator: dot
#: segments (also with ``;`` parameters, which some servers strip), encoded dots, slashes,
#: backslashes and NULs, and the same encoded twice (``%252e``) for a hop that decodes again.
_SUSPICIOUS = re.compile(
    r"(^|/)\.{1,2}(;[^/]*)?(/|$)|%2f|%5c|%2e|%25(2e|2f|5c|00)|\\|%00", re.IGNORECASE
)
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class ProxyTarget:
    """Where a proxied request goes in the child, and the path+query to send there."""

    metadata: dict[str, Any]
    path: str


#: Paths already parsed: kubectl and controllers repeat the same few paths, and the checks
#: below (two regular expressions and the splits) cost more than the rest of the routing.
#: Only accepted paths up to ``_PARSED_PATH_MAX`` characters are kept, and few of them (a
#: client's hot paths; paths with ever-changing queries churn through): at most about 1,200
#: Python objects. The value is rebuilt per request so nothing mutable is shared.
_PARSED: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {}
_PARSED_MAX = 256
_PARSED_PATH_MAX = 512


def parse_proxy_path(raw_path: str) -> tuple[str, ProxyTarget]:
    """Split ``/apis/proxies.clusternet.io/v1alpha1/sockets/<id>/proxy/<rest>`` (raw, with its
    query) into the cluster id and the target. Raises StatusError (400/404) on anything else."""
    hit = _PARSED.get(raw_path)
    if hit is not None:
        return hit[0], ProxyTarget(dict(hit[1]), hit[2])
    cluster_id, target = _parse_proxy_path(raw_path)
    if len(raw_path) <= _PARSED_PATH_MAX:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[raw_path] = (cluster_id, tuple(target.metadata.items()), target.path)
    return cluster_id, target


def _parse_proxy_path(raw_path: str) -> tuple[str, ProxyTarget]:
    if not raw_path.startswith(SOCKETS_PREFIX):
        raise StatusError(404, "not a sockets path")
    path, _, query = raw_path.partition("?")
    if _SUSPICIOUS.search(path):
        raise StatusError(400, "the proxy path must not contain dot segments or encoded separators")
    cluster_id, sep, rest = path[len(SOCKETS_PREFIX) :].partition("/proxy")
    if not sep or (rest and not rest.startswith("/")):
        raise StatusError(404, "the path must be sockets/<cluster-id>/proxy/...")
    check_cluster_id(cluster_id)
    kind, _, remainder = rest.lstrip("/").partition("/")
    suffix = "?" + query if query else ""
    if kind == "direct":
        return cluster_id, ProxyTarget({"kind": "direct"}, "/" + remainder + suffix)
    if kind in ("http", "https"):
        host, _, remainder = remainder.partition("/")
        if not _HOST.match(host):
            raise StatusError(400, f"bad proxy host {host!r}")
        target = {"kind": "url", "scheme": kind, "host": host}
        return cluster_id, ProxyTarget(target, "/" + remainder + suffix)
    raise StatusError(404, "proxy targets are direct/<path> or http|https/<host>/<path>")


def check_cluster_id(cluster_id: str) -> None:
    if not _CLUSTER_ID.match(cluster_id):
        raise StatusError(400, f"invalid cluster id {cluster_id!r}")


def _forbidden(
    user: UserInfo, verb: str, cluster_id: str, subresource: str, reason: str
) -> StatusError:
    resource = "sockets/" + subresource if subresource else "sockets"
    message = (
        f'sockets.{GROUP} "{cluster_id}" is forbidden: User "{user.name}" cannot {verb} '
        f'resource "{resource}" in API group "{GROUP}" at the cluster scope'
    )
    if reason:
        message += f": {reason}"
    return StatusError(
        403, message, details={"name": cluster_id, "group": GROUP, "kind": "sockets"}
    )


def caller(request: web.Request) -> UserInfo:
    user = request.get(REQUEST_USER_KEY)
    if not isinstance(user, UserInfo):
        raise StatusError(401, "Unauthorized")
    return user


async def authorize(
    authorizer: Authorizer,
    user: UserInfo,
    *,
    verb: str,
    cluster_id: str,
    subresource: str,
) -> None:
    decision = await authorizer.authorize(
        user, verb=verb, resource="sockets", subresource=subresource, name=cluster_id
    )
    if not decision.allowed:
        raise _forbidden(user, verb, cluster_id, subresource, decision.reason)


class Forwarder:
    """The ``sockets/<id>/proxy/...`` handler."""

    def __init__(
        self,
        registry: TunnelRegistry,
        authorizer: Authorizer,
        directory: ClusterDirectory,
        *,
        metrics: ProxyMetrics | None = None,
        tunnel_wait: float = 0.0,
    ) -> None:
        self._registry = registry
        self._authorizer = authorizer
        self._directory = directory
        self._metrics = metrics
        self._tunnel_wait = tunnel_wait

    @filters_credentials  # _handle drops the caller's credential headers as it copies them
    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        verb = VERBS.get(request.method, "")
        code = 500
        try:
            response = await self._handle(request, verb)
            code = response.status
            return response
        except StatusError as exc:
            code = exc.code
            raise
        finally:
            if self._metrics is not None:
                self._metrics.request_finished(
                    verb or "unknown", code, time.perf_counter() - started
                )

    async def _handle(self, request: web.Request, verb: str) -> web.StreamResponse:
        user = caller(request)
        if not verb:
            raise StatusError(405, f"method {request.method} is not supported")
        cluster_id, target = parse_proxy_path(request.raw_path)
        decision = await self._authorizer.authorize(
            user, verb=verb, resource="sockets", subresource="proxy", name=cluster_id
        )
        if not decision.allowed:
            raise _forbidden(user, verb, cluster_id, "proxy", decision.reason)
        # The usual case without a coroutine: a live session for the cluster.
        session = self._registry.get(cluster_id)
        if session is None:
            session = await self._registry.wait_for(cluster_id, self._tunnel_wait)
        if session is None:
            if self._directory.is_known(cluster_id) is False:
                raise StatusError(
                    404, f'cluster "{cluster_id}" not found', details={"name": cluster_id}
                )
            raise StatusError(
                503, f'cluster "{cluster_id}" is not connected: its agent has no live tunnel'
            )
        # Without the credentials: those of the authentication middleware (when it ran), and
        # always Authorization, Impersonate-* and X-Remote-*.
        credentials = request.get(CREDENTIAL_HEADERS_KEY)
        if credentials is None:
            forwarded, upgrade = hop.request_headers(request.headers.items())
        else:
            forwarded, upgrade = hop.request_headers(request.headers.items(), *credentials)
        head = frames.HttpRequestHead(request.method, target.path, forwarded)
        has_body = request.body_exists and not upgrade
        metadata = {
            METADATA_KEY: user.to_metadata(),
            TARGET_KEY: target.metadata,
            UPGRADE_KEY: upgrade,
            BODY_KEY: has_body,
        }
        # This frame stays suspended for the whole of a watch: drop what went into the OPEN.
        del forwarded
        try:
            # Without a body (and not an upgrade) our side ends with the OPEN, in one message.
            stream = await session.open_stream(head, metadata, end=not has_body and not upgrade)
        except LocalProtocolError as exc:
            if exc.code is not ErrorCode.FRAME_SIZE_ERROR:
                raise StatusError(
                    503, f'cluster "{cluster_id}": tunnel unavailable: {exc}'
                ) from None
            # The request head does not fit in one OPEN frame; the tunnel itself is fine.
            raise StatusError(
                431,
                "the request's headers are too large to forward",
                reason="RequestHeaderFieldsTooLarge",
            ) from None
        except TunnelError as exc:
            raise StatusError(503, f'cluster "{cluster_id}": tunnel unavailable: {exc}') from None
        del head, metadata
        kind = "upgrade" if upgrade else "http"
        if self._metrics is not None:
            self._metrics.stream_opened(kind)
        finished = False
        try:
            if upgrade:
                return await self._upgrade(request, stream, cluster_id)
            response, finished = await self._forward(request, stream, cluster_id)
            return response
        finally:
            # Whatever ended the request (error, the client hanging up and aiohttp cancelling
            # us, an upload still running), the stream must not outlive it. A stream that
            # finished both ways is left alone: resetting it would change nothing on the wire
            # but still wake the session's writer once per request.
            if not finished:
                stream.reset(ErrorCode.CANCEL, "request ended")
            if self._metrics is not None:
                self._metrics.stream_closed(kind)

    async def _forward(
        self, request: web.Request, stream: TunnelStream, cluster_id: str
    ) -> tuple[web.StreamResponse, bool]:
        """The response, and whether the stream finished both ways (the child's body read to
        its end, our side ended, no upload still running)."""
        upload = (
            asyncio.ensure_future(self._upload(request, stream)) if request.body_exists else None
        )
        if upload is None:
            stream.write_eof()  # ended with the OPEN already, unless it carried a body
        response: web.StreamResponse | None = None
        try:
            try:
                # Taken, not kept in the stream: a watch holds its stream for hours.
                head = await stream.take_response()
            except StreamResetError as exc:
                raise _stream_failure(exc, cluster_id) from None
            if 300 <= head.status < 400:
                stream.reset(ErrorCode.CANCEL, "redirect refused")
                raise StatusError(
                    502,
                    f'cluster "{cluster_id}": the child answered with a redirect '
                    f"({head.status}), which the hub does not pass on",
                )
            # When the body (or its end) is already here, the head goes out with the first
            # chunk in one write; otherwise at once, so that a watch's client sees it.
            ready = stream.buffered > 0 or stream.at_eof
            # The response copies the headers into its own map: give it the decoded pairs.
            response = (_HeadWithBody if ready else web.StreamResponse)(
                status=head.status, headers=head.headers
            )
            length = head.metadata.get(CONTENT_LENGTH_KEY)
            if isinstance(length, int) and length >= 0:
                response.content_length = length
            del head  # a watch lives long here: keep no copy of the head it no longer needs
            await response.prepare(request)
            while chunk := await stream.read(_WRITE_CHUNK):
                await response.write(chunk)
                if self._metrics is not None:
                    self._metrics.bytes_transferred("down", len(chunk))
            await response.write_eof()
            return response, upload is None or upload.done()
        except StreamResetError as exc:
            if response is None:
                raise
            logger.info("cluster %s: stream failed mid-response: %s", cluster_id, exc)
            _abort(request)
            return response, False
        except (ConnectionError, asyncio.CancelledError):
            stream.reset(ErrorCode.CANCEL, "client went away")
            raise
        finally:
            if upload is not None and not upload.done():
                upload.cancel()

    async def _upload(self, request: web.Request, stream: TunnelStream) -> None:
        try:
            async for chunk in request.content.iter_any():
                stream.write(chunk)
                await stream.drain()
                if self._metrics is not None:
                    self._metrics.bytes_transferred("up", len(chunk))
            stream.write_eof()
        except StreamResetError:
            return
        except (ConnectionError, OSError):
            stream.reset(ErrorCode.CANCEL, "client went away")

    async def _response_head(self, stream: TunnelStream, cluster_id: str) -> ResponseHead:
        try:
            # Taken, not kept in the stream: a watch holds its stream for hours.
            return await stream.take_response()
        except StreamResetError as exc:
            raise _stream_failure(exc, cluster_id) from None

    async def _upgrade(
        self, request: web.Request, stream: TunnelStream, cluster_id: str
    ) -> web.StreamResponse:
        head = await self._response_head(stream, cluster_id)
        if head.status != 101:
            # A refused upgrade: pass the child's answer (>= 400) so kubectl's fallback works;
            # anything else in answer to an upgrade is a broken upstream, as kube's proxy says.
            if head.status < 400:
                stream.reset(ErrorCode.CANCEL, "upgrade not switched")
                raise StatusError(
                    503,
                    f'cluster "{cluster_id}": upgrade answered with {head.status} instead of 101',
                )
            stream.write_eof()
            body = b"".join([chunk async for chunk in stream])
            response = web.Response(status=head.status, body=body)
            for name, value in head.headers:
                response.headers.add(name, value)
            return response
        connection = await hijack.switch_protocols(request, head.headers)
        up = asyncio.ensure_future(_client_to_stream(connection, stream))
        try:
            while chunk := await stream.read(_WRITE_CHUNK):
                await connection.write(chunk)
        except StreamResetError as exc:
            logger.info("cluster %s: upgraded stream ended: %s", cluster_id, exc)
        except (ConnectionError, OSError):
            stream.reset(ErrorCode.CANCEL, "client went away")
        finally:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
            connection.close()
        return connection.response


async def _client_to_stream(connection: hijack.UpgradedConnection, stream: TunnelStream) -> None:
    try:
        while chunk := await connection.read():
            stream.write(chunk)
            await stream.drain()
        stream.write_eof()
    except StreamResetError:
        return


def _stream_failure(exc: StreamResetError, cluster_id: str) -> StatusError:
    where = f'cluster "{cluster_id}"'
    if exc.code is ErrorCode.DIAL_FAILED:
        return StatusError(502, f"{where}: the child's API server is unreachable: {exc.reason}")
    if exc.code is ErrorCode.FORBIDDEN:
        return StatusError(403, f"{where}: the agent refuses this target: {exc.reason}")
    if exc.code in (ErrorCode.REFUSED_STREAM, ErrorCode.GOING_AWAY, ErrorCode.NO_ERROR):
        return StatusError(503, f"{where}: the tunnel is going away, retry: {exc.reason}")
    return StatusError(502, f"{where}: the tunnel failed: {exc.code.name} {exc.reason}")


class _HeadWithBody(web.StreamResponse):
    """A response whose head is written together with its first body chunk (or its end)."""

    _send_headers_immediately = False


def _abort(request: web.Request) -> None:
    """End a response that can no longer complete: the client must see an error, not EOF."""
    transport = request.transport
    if transport is not None:
        transport.abort()
