"""Prometheus metrics of one hub, on its own registry (``/metrics``).

A registry per hub, not the process-global one, so that several hubs in one test process (or
one process hosting other servers) never share or double-register series. The two socket
metrics keep Clusternet's names and buckets (``clusternet_socket_connections_count``,
``clusternet_socket_connections_duration_seconds``, exponential 60 s x4, 8 buckets) so existing
dashboards work; the rest are ours. Implements ``proxy.ports.ProxyMetrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from clusternet_aa.apiserver.http2 import Http2Listener

#: Clusternet's tunnel-lifetime buckets: 60 s, 4 min, 16 min ... about 11 days.
CONNECTION_DURATION_BUCKETS = tuple(60.0 * 4**i for i in range(8))
#: Proxied request latency buckets, seconds (kube-apiserver's request-duration style).
REQUEST_DURATION_BUCKETS = (
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6, 8, 10,
    15, 20, 30, 45, 60,
)  # fmt: skip


class HubMetrics:
    """The hub's series; pass it wherever a ``ProxyMetrics`` is wanted."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.connections = Gauge(
            "clusternet_socket_connections_count",
            "Number of socket connections",
            registry=self.registry,
        )
        self.connection_duration = Histogram(
            "clusternet_socket_connections_duration_seconds",
            "Active socket connection duration in seconds",
            buckets=CONNECTION_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.connections_opened = Counter(
            "clusternet_socket_connections_opened",
            "Agent tunnels accepted",
            registry=self.registry,
        )
        self.streams = Gauge(
            "clusternet_socket_streams",
            "Tunnel streams currently open, by kind (http, upgrade, ...)",
            ["kind"],
            registry=self.registry,
        )
        self.streams_opened = Counter(
            "clusternet_socket_streams_opened",
            "Tunnel streams opened, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "clusternet_socket_bytes",
            "Payload bytes relayed through tunnels, by direction (to_agent, from_agent)",
            ["direction"],
            registry=self.registry,
        )
        self.requests = Counter(
            "clusternet_proxy_requests",
            "Requests proxied to child clusters, by verb and HTTP status code",
            ["verb", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "clusternet_proxy_request_duration_seconds",
            "Latency of requests proxied to child clusters (to the response head for streams)",
            ["verb"],
            buckets=REQUEST_DURATION_BUCKETS,
            registry=self.registry,
        )
        #: Labelled children by (metric, label values): ``labels()`` validates and locks on
        #: every call, which is a measurable part of a small proxied request.
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _child(self, metric: Any, name: str, *values: str) -> Any:
        key = (name, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # -- proxy.ports.ProxyMetrics ----------------------------------------------------------

    def tunnel_opened(self, cluster_id: str) -> None:
        self.connections.inc()
        self.connections_opened.inc()

    def tunnel_closed(self, cluster_id: str, lifetime_seconds: float) -> None:
        self.connections.dec()
        self.connection_duration.observe(lifetime_seconds)

    def stream_opened(self, kind: str) -> None:
        self._child(self.streams, "streams", kind).inc()
        self._child(self.streams_opened, "streams_opened", kind).inc()

    def stream_closed(self, kind: str) -> None:
        self._child(self.streams, "streams", kind).dec()

    def bytes_transferred(self, direction: str, count: int) -> None:
        if count > 0:
            self._child(self.bytes, "bytes", direction).inc(count)

    def request_finished(self, verb: str, code: int, seconds: float) -> None:
        self._child(self.requests, "requests", verb, str(code)).inc()
        self._child(self.request_duration, "request_duration", verb).observe(max(0.0, seconds))

    def watch_listener(self, listener: Http2Listener) -> None:
        """Expose the listener's connection and HTTP/2 stream counts, read at scrape time (the
        listener counts anyway; nothing is added to its per-request path)."""
        self.registry.register(_ListenerCollector(listener))

    # -- HTTP -------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """The text exposition format, or OpenMetrics when the scraper's Accept asks for it."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encoder(self.registry))
        response.headers["Content-Type"] = content_type
        return response

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.handle)


class _ListenerCollector(Collector):
    """The hub listener's counters as Prometheus series."""

    def __init__(self, listener: Http2Listener) -> None:
        self._listener = listener

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        listener = self._listener
        accepted = CounterMetricFamily(
            "clusternet_hub_connections_accepted",
            "TLS connections accepted by the hub's listener, by the protocol ALPN chose",
            labels=["protocol"],
        )
        accepted.add_metric(["h2"], listener.h2_connections_total)
        accepted.add_metric(["http/1.1"], listener.http11_connections_total)
        yield accepted
        yield GaugeMetricFamily(
            "clusternet_hub_http2_connections",
            "HTTP/2 connections open on the hub's listener",
            value=len(listener.connections),
        )
        yield GaugeMetricFamily(
            "clusternet_hub_http2_streams",
            "HTTP/2 request streams whose handler is running (watches included)",
            value=listener.active_streams,
        )
        yield CounterMetricFamily(
            "clusternet_hub_http2_streams_served",
            "HTTP/2 request streams served",
            value=listener.h2_streams_total,
        )
