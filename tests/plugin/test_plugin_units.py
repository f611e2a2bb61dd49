"""Plugin helpers without a cluster: error classification, rendering, installation."""

from __future__ import annotations

import os

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
