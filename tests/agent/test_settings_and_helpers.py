"""Flags, validation, quantities and the status helpers, without any server."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest

from clusternet_aa.agent import quantity
from clusternet_aa.agent.settings import SettingsError
from clusternet_aa.agent.status import (
    aggregated_labels,
    flag_value,
    merge_ready,
    node_statistics,
    ready_condition,
    summed_resources,
)
from clusternet_aa.apis.meta import Condition
from clusternet_aa.cli import agent as cli
from clusternet_aa.flags import parse_duration
from tests.e2e.fleet import BIN

TOKEN = "abcdef.0123456789abcdef"


def parse(*argv: str) -> object:
    return cli.settings_from_args(cli.build_parser().parse_args(list(argv)))


def test_clusternet_flags_map_onto_settings(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "child.kubeconfig"
    kubeconfig.write_text("{}")
    settings = cli.settings_from_args(
        cli.build_parser().parse_args(
            [
                "--cluster-reg-parent-url=https://parent:6443",
                f"--cluster-reg-token={TOKEN}",
                "--cluster-reg-name=edge-1",
                "--cluster-reg-namespace=clusternet-edge",
                "--cluster-reg-type=EdgeCluster",
                "--cluster-sync-mode=Dual",
                "--cluster-labels=region=eu,zone=a",
                "--cluster-status-update-frequency=3m",
                "--cluster-status-collect-frequency=20s",
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--leader-elect-resource-namespace=agents",
                "--leader-elect-lease-duration=30s",
                "--feature-gates=SocketConnection=true,AppPusher=true",
                "--dial-allow=10.0.0.1:8080",
                "--dial-allow=metrics:9090",
                "--hub-url=https://hub.example:443",
                "--labels-aggregate-prefix=node.example.io/",
            ]
        )
    )
    assert settings.parent_url == "https://parent:6443"
    assert settings.cluster_name == "edge-1"
    assert settings.cluster_namespace == "clusternet-edge"
    assert settings.cluster_type == "EdgeCluster"
    assert settings.sync_mode == "Dual"
    assert dict(settings.cluster_labels) == {"region": "eu", "zone": "a"}
    assert settings.status_update_frequency == 180
    assert settings.status_collect_frequency == 20
    assert settings.kubeconfig == kubeconfig
    assert settings.leader_election.enabled is False
    assert settings.agent_namespace == "agents"
    assert settings.leader_election.lease_duration == 30
    assert settings.app_pusher
    assert settings.socket_connection
    assert settings.dial_allow == ("10.0.0.1:8080", "metrics:9090")
    assert settings.hub_url == "https://hub.example:443"
    assert settings.labels_aggregate_prefixes == ("node.example.io/",)


def test_defaults_are_clusternets() -> None:
    settings = cli.settings_from_args(
        cli.build_parser().parse_args(
            ["--cluster-reg-parent-url=https://p", f"--cluster-reg-token={TOKEN}"]
        )
    )
    assert settings.cluster_name_prefix == "clusternet-cluster"
    assert settings.cluster_type == "StandardCluster"
    assert settings.sync_mode == "Pull"
    assert settings.status_update_frequency == 180
    assert settings.status_collect_frequency == 20
    assert settings.leader_election.enabled
    assert settings.leader_election.namespace == "clusternet-system"
    assert settings.leader_election.name == "clusternet-agent"
    assert (settings.leader_election.lease_duration, settings.leader_election.renew_deadline) == (
        15,
        10,
    )
    assert settings.labels_aggregate_prefixes == ("node.clusternet.io/",)
    assert settings.labels_aggregate_threshold == 0.8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster-reg-parent-url="], "--cluster-reg-parent-url is required"),
        (["--cluster-reg-token="], "--cluster-reg-token is required"),
        (["--cluster-reg-token=nope"], "bootstrap token"),
        (["--cluster-reg-parent-url=ftp://p"], "http(s)"),
        (["--cluster-sync-mode=Push"], "AppPusher"),
        (["--cluster-sync-mode=Sideways"], "--cluster-sync-mode"),
        (["--cluster-reg-type=Huge"], "--cluster-reg-type"),
        (["--cluster-reg-name=Not_A_Name"], "--cluster-reg-name"),
        (["--feature-gates=Teleport=true"], "unrecognized feature gate"),
        (["--feature-gates=AppPusher=maybe"], "invalid value"),
        (["--dial-allow=nohost"], "--dial-allow"),
        (["--cluster-labels=novalue"], "--cluster-labels"),
        (["--leader-elect-renew-deadline=20s"], "lease-duration"),
        (["--kubeconfig=/nonexistent/kubeconfig"], "no such file"),
    ],
)
def test_bad_flags_name_the_flag(argv: list[str], message: str) -> None:
    base = ["--cluster-reg-parent-url=https://p", f"--cluster-reg-token={TOKEN}"]
    with pytest.raises(SettingsError, match=".*" + message.replace("(", r"\(").replace(")", r"\)")):
        cli.settings_from_args(cli.build_parser().parse_args([*base, *argv]))


def test_go_durations() -> None:
    assert parse_duration("3m") == 180
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2.5") == 2.5
    with pytest.raises(SettingsError):
        parse_duration("soon")


async def test_the_console_script_rejects_bad_flags_with_exit_2() -> None:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "clusternet-agent"),
        "--cluster-reg-parent-url=https://p",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"--cluster-reg-token is required" in err


def test_quantities_sum_in_canonical_form() -> None:
    assert quantity.total(["4", "4", "4"]) == "12"
    assert quantity.total(["8Gi", "8Gi", "8Gi"]) == "24Gi"
    assert quantity.total(["3900m", "4", "100m"]) == "8"
    assert quantity.total(["3900m", "4"]) == "7900m"
    assert quantity.total(["1536Mi", "512Mi"]) == "2Gi"
    assert quantity.total(["1000Ki", "24Ki"]) == "1Mi"
    assert quantity.total(["1e3", "1k"]) == "2k"
    assert quantity.total(["bogus", "1"]) == "1"
    assert quantity.total([]) == "0"


def _node(name: str, ready: str | None, labels: dict[str, str] | None = None) -> dict[str, object]:
    conditions = [{"type": "Ready", "status": ready}] if ready else []
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "status": {
            "conditions": conditions,
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "1900m", "memory": "3Gi"},
        },
    }


def test_node_statistics_and_sums() -> None:
    nodes = [_node("a", "True"), _node("b", "False"), _node("c", "Unknown"), _node("d", None)]
    stats = node_statistics(nodes)
    assert (stats.ready_nodes, stats.not_ready_nodes, stats.unknown_nodes, stats.lost_nodes) == (
        1,
        1,
        1,
        1,
    )
    assert summed_resources(nodes, "capacity") == {"cpu": "8", "memory": "16Gi"}
    assert summed_resources(nodes, "allocatable") == {"cpu": "7600m", "memory": "12Gi"}
    gpu = _node("g", "True")
    gpu["status"]["capacity"]["nvidia.com/gpu"] = "2"  # type: ignore[index]
    assert summed_resources([gpu, *nodes], "capacity")["nvidia.com/gpu"] == "2"


def test_label_aggregation_skips_control_plane_and_applies_the_threshold() -> None:
    workers = [_node(f"w{i}", "True", {"node.clusternet.io/gpu": "true"}) for i in range(4)]
    workers.append(_node("w4", "True", {"node.clusternet.io/zone": "a"}))
    control = _node(
        "cp",
        "True",
        {"node-role.kubernetes.io/control-plane": "", "node.clusternet.io/zone": "a"},
    )
    result = aggregated_labels([*workers, control], ["node.clusternet.io/"], 0.8)
    assert result == {"node.clusternet.io/gpu": "true"}
    assert aggregated_labels([control], ["node.clusternet.io/"], 0.8) == {}
    assert aggregated_labels(workers, ["node.clusternet.io/"], 0.2) == {
        "node.clusternet.io/gpu": "true",
        "node.clusternet.io/zone": "a",
    }


def test_cidr_flags_from_pod_commands() -> None:
    pods = [
        {
            "spec": {
                "containers": [
                    {
                        "command": ["kube-controller-manager", "--cluster-cidr=10.244.0.0/16"],
                        "args": ["--service-cluster-ip-range", "10.96.0.0/12"],
                    }
                ]
            }
        }
    ]
    assert flag_value(pods, "--cluster-cidr") == "10.244.0.0/16"
    assert flag_value(pods, "--service-cluster-ip-range") == "10.96.0.0/12"
    assert flag_value(pods, "--missing") == ""


def test_ready_condition_and_heartbeat_merge() -> None:
    assert ready_condition(True, False, False).status == "True"
    assert ready_condition(False, True, True).status == "True"
    assert ready_condition(False, True, False).reason == "ManagedClusterNotReady"
    earlier = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    existing = [
        Condition(type="Ready", status="True", reason="x", last_transition_time=earlier),
        Condition(type="ClusterInit", status="True", reason="y", last_transition_time=earlier),
    ]
    merged = merge_ready(existing, ready_condition(True, True, True), now)
    assert [c.type for c in merged] == ["Ready", "ClusterInit"]
    assert merged[0].last_transition_time == now  # refreshed every report: the heartbeat
    assert merged[1].last_transition_time == earlier


def test_tunnel_url_for_a_direct_hub_url() -> None:
    from clusternet_aa.agent.tunnel_client import tunnel_url

    assert (
        tunnel_url("https://hub.clusternet-system.svc:443", "c1")
        == "wss://hub.clusternet-system.svc:443/apis/proxies.clusternet.io/v1alpha1/sockets/c1"
    )
    # a --hub-url that already names the sockets collection is not doubled
    assert (
        tunnel_url("wss://hub:8443/apis/proxies.clusternet.io/v1alpha1/sockets/", "c1")
        == "wss://hub:8443/apis/proxies.clusternet.io/v1alpha1/sockets/c1"
    )
