"""Prometheus metrics of one hub, on its own registry (``/metrics``).

A registry per hub, not the process-global one, so that several hubs in one test process (or
one process hosting other servers) never share or double-register series. The two socket
metrics keep Clusternet's names and buckets (``clusternet_socket_connections_count``,
``clusternet_socket_connections_duration_seconds``, exponential 60 s x4, 8 buckets) so existing
dashboards work; the rest are ours. Implements ``proxy.ports.ProxyMetrics``.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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
#: The upper bounds of the request-duration buckets, the last one +Inf (prometheus_client's).
_REQUEST_BOUNDS = (*map(float, REQUEST_DURATION_BUCKETS), math.inf)
#: Their ``le`` label values, as prometheus_client writes them.
_REQUEST_LE = (*map(repr, _REQUEST_BOUNDS[:-1]), "+Inf")


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
        #: The series every proxied request updates, kept as plain numbers (see _ProxySeries).
        self.proxy = _ProxySeries()
        self.registry.register(self.proxy)

    # -- proxy.ports.ProxyMetrics ----------------------------------------------------------

    def tunnel_opened(self, cluster_id: str) -> None:
        self.connections.inc()
        self.connections_opened.inc()

    def tunnel_closed(self, cluster_id: str, lifetime_seconds: float) -> None:
        self.connections.dec()
        self.connection_duration.observe(lifetime_seconds)

    def stream_opened(self, kind: str) -> None:
        stream = self.proxy.streams.get(kind) or self.proxy.new_stream(kind)
        stream.open += 1
        stream.opened += 1

    def stream_closed(self, kind: str) -> None:
        stream = self.proxy.streams.get(kind) or self.proxy.new_stream(kind)
        stream.open -= 1

    def bytes_transferred(self, direction: str, count: int) -> None:
        if count > 0:
            total = self.proxy.bytes.get(direction) or self.proxy.new_bytes(direction)
            total.value += count

    def request_finished(self, verb: str, code: int, seconds: float) -> None:
        proxy = self.proxy
        requests = proxy.requests.get((verb, code)) or proxy.new_requests(verb, code)
        requests.value += 1
        duration = proxy.durations.get(verb) or proxy.new_duration(verb)
        seconds = max(0.0, seconds)
        duration.counts[bisect.bisect_left(_REQUEST_BOUNDS, seconds)] += 1
        duration.sum += seconds

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


@dataclass
class _Stream:
    open: int = 0
    opened: int = 0
    created: float = field(default_factory=time.time)


@dataclass
class _Total:
    value: int = 0
    created: float = field(default_factory=time.time)


@dataclass
class _Duration:
    counts: list[int] = field(default_factory=lambda: [0] * len(_REQUEST_BOUNDS))
    sum: float = 0.0
    created: float = field(default_factory=time.time)


class _ProxySeries(Collector):
    """The per-request series (streams, bytes, requests, request durations) as plain numbers,
    turned into Prometheus samples at scrape time.

    prometheus_client's children take a lock, check the amount and look up their value on
    every update: seven times per proxied request, a tenth of the hub's handling of a small
    GET. Here an update is an addition; every update and every scrape runs on the event
    loop's thread, so nothing needs a lock. The exposition is that of the prometheus_client
    Gauge, Counters (``_total`` and ``_created``) and Histogram these series used to be.
    """

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.bytes: dict[str, _Total] = {}
        self.requests: dict[tuple[str, int], _Total] = {}
        self.durations: dict[str, _Duration] = {}

    def new_stream(self, kind: str) -> _Stream:
        stream = self.streams[kind] = _Stream()
        return stream

    def new_bytes(self, direction: str) -> _Total:
        total = self.bytes[direction] = _Total()
        return total

    def new_requests(self, verb: str, code: int) -> _Total:
        total = self.requests[verb, code] = _Total()
        return total

    def new_duration(self, verb: str) -> _Duration:
        duration = self.durations[verb] = _Duration()
        return duration

    def collect(self) -> Iterator[Metric]:
        # Copies: a scrape may run while a handler adds a label value.
        streams = list(self.streams.items())
        gauge = GaugeMetricFamily(
            "clusternet_socket_streams",
            "Tunnel streams currently open, by kind (http, upgrade, ...)",
            labels=["kind"],
        )
        opened = CounterMetricFamily(
            "clusternet_socket_streams_opened", "Tunnel streams opened, by kind", labels=["kind"]
        )
        for kind, stream in streams:
            gauge.add_metric([kind], stream.open)
            opened.add_metric([kind], stream.opened, created=stream.created)
        yield gauge
        yield opened
        relayed = CounterMetricFamily(
            "clusternet_socket_bytes",
            "Payload bytes relayed through tunnels, by direction (to_agent, from_agent)",
            labels=["direction"],
        )
        for direction, total in list(self.bytes.items()):
            relayed.add_metric([direction], total.value, created=total.created)
        yield relayed
        requests = CounterMetricFamily(
            "clusternet_proxy_requests",
            "Requests proxied to child clusters, by verb and HTTP status code",
            labels=["verb", "code"],
        )
        for (verb, code), total in list(self.requests.items()):
            requests.add_metric([verb, str(code)], total.value, created=total.created)
        yield requests
        name = "clusternet_proxy_request_duration_seconds"
        durations = HistogramMetricFamily(
            name,
            "Latency of requests proxied to child clusters (to the response head for streams)",
            labels=["verb"],
        )
        for verb, duration in list(self.durations.items()):
            cumulative, buckets = 0, []
            for le, count in zip(_REQUEST_LE, duration.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            durations.add_metric([verb], buckets, duration.sum)
            durations.add_sample(name + "_created", {"verb": verb}, duration.created)
        yield durations
