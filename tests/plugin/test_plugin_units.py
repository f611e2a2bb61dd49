"""Plugin helpers without a cluster: error classification, rendering, installation."""

from __future__ import annotations

import json
import logging
import os

import pytest

from clusternet_aa.plugin import logs
from clusternet_aa.plugin.clusters import Cluster, classify, render
from clusternet_aa.plugin.kubectl import KubectlError, one_line
from tests.manifests.kubectl_runner import BIN


def test_tunnel_states_from_kubectl_errors() -> None:
    def state(stderr: str) -> str:
        reason, message = one_line(stderr)
        return classify(KubectlError(message, reason=reason))

    server_error = "Error from server ({}): {}\n"
    cases = [
        ("ServiceUnavailable", 'cluster "x" is not connected: no live tunnel', "Down"),
        ("Forbidden", 'User "bob" cannot get resource "sockets/proxy" in API group', "Forbidden"),
        ("NotFound", "the server could not find the requested resource", "NoHub"),
        ("NotFound", 'cluster "x" is not known to the hub', "Unknown"),
        ("ServiceUnavailable", "the server is currently unable to handle it", "HubUnavailable"),
    ]  # fmt: skip
    for reason, message, expected in cases:
        assert state(server_error.format(reason, message)) == expected, message
    assert state("Unable to connect to the server: dial tcp: connection refused\n") == "Error"
    table = render([Cluster("a", "ns", "id", "v1", "True", "Pull", "Up")], "table")
    assert table.splitlines()[1].split() == ["a", "id", "v1", "True", "Up"]


def test_the_plugin_is_on_path_for_kubectl() -> None:
    assert os.access(BIN / "kubectl-clusternet", os.X_OK)


async def test_long_waits_report_progress(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    logs.configure("json", 0)
    logs.log.propagate = True  # let caplog see the records
    try:
        with caplog.at_level(logging.WARNING, logger="clusternet_aa.plugin"):
            results = await logs.gather_with_progress(
                "probes", [asyncio.sleep(0.25, "slow"), asyncio.sleep(0, "fast")], every=0.1
            )
    finally:
        logs.log.propagate = False
    assert results == ["slow", "fast"]
    progress = [r for r in caplog.records if r.getMessage() == "still waiting for probes"]
    assert progress
    assert progress[0].fields == {"done": 1, "total": 2, "elapsed": "0s"}  # type: ignore[attr-defined]
    line = json.loads(logs.JsonFormatter().format(progress[0]))
    assert (line["level"], line["done"], line["total"]) == ("warning", 1, 2)
