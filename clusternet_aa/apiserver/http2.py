"""HTTP/2 on the hub's TLS listener, beside aiohttp's HTTP/1.1, for the same application.

Why: every watch that reaches the hub over HTTP/1.1 holds a TLS connection of its own (about
35 KiB of hub memory with a client certificate, plus aiohttp's per-connection objects).
kube-apiserver's aggregator and client-go speak HTTP/2 when the server's ALPN offers ``h2``, and
then multiplex many requests over one connection, so a watch costs its stream state only.

How: :class:`Http2Listener` is the protocol factory given to ``loop.create_server``. After the
TLS handshake it looks at the negotiated ALPN protocol: ``h2`` gets an :class:`Http2Connection`
(HTTP/2 framing by the sans-IO ``h2`` library), anything else gets aiohttp's own
``RequestHandler`` from ``web.Server`` unchanged (agents' websocket tunnels, HTTP/1.1 upgrades
for exec/attach/port-forward, every HTTP/1.1 client). Each HTTP/2 request stream becomes a real
``web.Request`` made by the same ``web.Server`` request factory and served by the same handler,
so routing, middlewares, authentication (the client certificate of the TLS connection,
front-proxy headers), authorization and the proxy forwarder are shared.

Per stream (:class:`Http2Stream`): one handler task and nothing else. The request body is a
``StreamReader`` fed from DATA frames whose stream window is returned only as the handler reads
(a slow handler back-pressures its own stream); connection credit is returned as bytes arrive,
so one stalled stream never blocks the others. The response writer sends HEADERS/DATA within
the peer's windows and waits for credit (``drain``), and stops while the TLS transport's write
buffer is above its high-water mark, so a stalled reader costs at most the chunk being written.
``request.transport`` is a per-stream view: ``get_extra_info`` reads the TLS connection,
``abort``/``close`` reset that stream only.

Modules: this one is the listener (settings, ALPN dispatch, shutdown, counters);
``http2_connection`` one HTTP/2 connection; ``http2_stream`` one request stream;
``http2_headers`` the request head checks; ``http2_hpack`` the response header encoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from aiohttp import web

from clusternet_aa.apiserver.http2_connection import Http2Connection

# hpack logs every header it encodes or decodes at DEBUG, credentials included: never let a
# verbose hub (-v 4 and up turns DEBUG on) write bearer tokens to its log.
logging.getLogger("hpack").setLevel(logging.WARNING)

#: ALPN protocol ids, most preferred first.
ALPN_H2 = "h2"
ALPN_HTTP11 = "http/1.1"


@dataclass(frozen=True, kw_only=True)
class Http2Settings:
    """Limits of the HTTP/2 listener; every one bounds what a client can make the hub hold."""

    #: SETTINGS_MAX_CONCURRENT_STREAMS: kube-apiserver sets 1000 for its own HTTP/2 listener
    #: (Go's default is 250); Go clients open another connection beyond it.
    max_concurrent_streams: int = 1000
    #: SETTINGS_MAX_HEADER_LIST_SIZE: the same bound as the HTTP/1.1 side's header limit.
    max_header_list_size: int = 64 * 1024
    #: SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may have unread in the hub.
    stream_window: int = 256 * 1024
    #: Connection window for request bodies: returned as bytes arrive (a stalled stream does
    #: not block the others) while the connection's unread body bytes stay under
    #: ``max_buffered``, and as handlers read them beyond that.
    connection_window: int = 1024 * 1024
    #: Request body bytes all streams of one connection may have unread in the hub (a client
    #: could otherwise fill ``stream_window`` on each of ``max_concurrent_streams`` streams).
    max_buffered: int = 4 * 1024 * 1024
    #: Seconds a connection without streams stays open (GOAWAY, then close): aiohttp's
    #: keep-alive timeout for HTTP/1.1, so an idle client costs the same on either protocol.
    idle_timeout: float = 75.0


class Http2Listener:
    """The protocol factory of the hub's TLS listener: ALPN ``h2`` to HTTP/2, else aiohttp.

    It also keeps the HTTP/2 connections, for the GOAWAY and cancellation of shutdown, and
    counts connections and streams (the tests and the benchmark read them to prove which
    protocol served a client).
    """

    def __init__(
        self, server: web.Server, *, settings: Http2Settings | None = None, enabled: bool = True
    ) -> None:
        self.server = server
        self.settings = settings or Http2Settings()
        self.enabled = enabled
        self.connections: set[Http2Connection] = set()
        #: Connections accepted since start, by negotiated protocol.
        self.h2_connections_total = 0
        self.http11_connections_total = 0
        #: HTTP/2 request streams served since start.
        self.h2_streams_total = 0
        self._draining = False
        self._idle: asyncio.Event | None = None

    def __call__(self) -> asyncio.BaseProtocol:
        return _Negotiator(self)

    @property
    def active_streams(self) -> int:
        return sum(len(connection.streams) for connection in self.connections)

    def _connection_made(self, transport: asyncio.Transport) -> asyncio.BaseProtocol:
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == ALPN_H2 and self.enabled and not self._draining:
            self.h2_connections_total += 1
            protocol = Http2Connection(self)
            self.connections.add(protocol)
            return protocol
        self.http11_connections_total += 1
        return self.server()

    def _connection_closed(self, connection: Http2Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def goaway(self) -> None:
        """Tell every HTTP/2 client to open no new streams here (GOAWAY NO_ERROR); streams in
        flight go on, connections close as their last stream ends."""
        self._draining = True
        for connection in list(self.connections):
            connection.drain()

    async def shutdown(self, grace: float) -> None:
        """GOAWAY, wait up to ``grace`` seconds for in-flight streams, then cancel the rest."""
        self.goaway()
        if self.connections:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        streams = [
            stream
            for connection in list(self.connections)
            for stream in connection.streams.values()
            if stream.task is not None
        ]
        tasks = [stream.task for stream in streams if stream.task is not None]
        for stream in streams:
            stream.cancel_handler()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for connection in list(self.connections):
            connection.close(h2.errors.ErrorCodes.NO_ERROR)


class _Negotiator(asyncio.Protocol):
    """Stands in until the handshake is done, then hands the transport to the real protocol."""

    __slots__ = ("_listener",)

    def __init__(self, listener: Http2Listener) -> None:
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = cast(asyncio.Transport, transport)
        protocol = self._listener._connection_made(tls)
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
