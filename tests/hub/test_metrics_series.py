"""The per-request series kept as plain numbers expose what prometheus_client's objects did."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from clusternet_aa.apiserver.metrics import REQUEST_DURATION_BUCKETS, HubMetrics

STREAMS = [("open", "http"), ("open", "http"), ("open", "upgrade"), ("close", "http")]
BYTES = [("down", 1024), ("up", 0), ("down", 3), ("up", 7)]
REQUESTS = [
    ("get", 200, 0.001),
    ("get", 200, 0.005),  # on a bucket's bound: counted in that bucket
    ("get", 200, 0.0051),
    ("get", 404, 0.3),
    ("create", 201, 100.0),  # past the last bound: +Inf only
    ("get", 200, -1.0),  # a clock step back counts as 0
    ("delete", 503, 60.0),
]


def _reference() -> CollectorRegistry:
    """The same updates on the prometheus_client objects the hub used before."""
    registry = CollectorRegistry()
    streams = Gauge(
        "clusternet_socket_streams",
        "Tunnel streams currently open, by kind (http, upgrade, ...)",
        ["kind"],
        registry=registry,
    )
    opened = Counter(
        "clusternet_socket_streams_opened",
        "Tunnel streams opened, by kind",
        ["kind"],
        registry=registry,
    )
    relayed = Counter(
        "clusternet_socket_bytes",
        "Payload bytes relayed through tunnels, by direction (to_agent, from_agent)",
        ["direction"],
        registry=registry,
    )
    requests = Counter(
        "clusternet_proxy_requests",
        "Requests proxied to child clusters, by verb and HTTP status code",
        ["verb", "code"],
        registry=registry,
    )
    durations = Histogram(
        "clusternet_proxy_request_duration_seconds",
        "Latency of requests proxied to child clusters (to the response head for streams)",
        ["verb"],
        buckets=REQUEST_DURATION_BUCKETS,
        registry=registry,
    )
    for action, kind in STREAMS:
        if action == "open":
            streams.labels(kind).inc()
            opened.labels(kind).inc()
        else:
            streams.labels(kind).dec()
    for direction, count in BYTES:
        if count > 0:
            relayed.labels(direction).inc(count)
    for verb, code, seconds in REQUESTS:
        requests.labels(verb, str(code)).inc()
        durations.labels(verb).observe(max(0.0, seconds))
    return registry


def _ours() -> CollectorRegistry:
    metrics = HubMetrics()
    for action, kind in STREAMS:
        (metrics.stream_opened if action == "open" else metrics.stream_closed)(kind)
    for direction, count in BYTES:
        metrics.bytes_transferred(direction, count)
    for verb, code, seconds in REQUESTS:
        metrics.request_finished(verb, code, seconds)
    return metrics.registry


def _series(text: str) -> list[str]:
    """The proxy series' lines, creation times blanked (they differ by construction)."""
    lines = [
        line
        for line in text.splitlines()
        if re.search(r"clusternet_(socket_streams|socket_bytes|proxy_)", line)
    ]
    return [re.sub(r"(_created(\{[^}]*\})?) \S+$", r"\1 T", line) for line in lines]


@pytest.mark.parametrize("generate", [generate_latest, generate_openmetrics])
def test_exposition_is_unchanged(generate: object) -> None:
    assert callable(generate)
    expected = _series(generate(_reference()).decode())
    assert len(expected) > 60  # every series and bucket is in the comparison
    assert _series(generate(_ours()).decode()) == expected


def test_creation_times_are_real() -> None:
    text = generate_latest(_ours()).decode()
    created = re.findall(r"clusternet_proxy_requests_created\{[^}]*\} (\S+)", text)
    assert created
    assert all(float(value) > 1.6e9 for value in created)
