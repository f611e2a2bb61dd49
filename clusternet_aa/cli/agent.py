"""``clusternet-agent``: registers a child cluster with the parent and keeps it connected.

Flags are Clusternet's (``deploy/agent``), so existing manifests carry over, plus
``--dial-allow``, ``--hub-url``, ``--hub-ca-file`` and ``--cluster-reg-retry-period``. This
module only parses flags into :class:`AgentSettings`, configures logging and runs the agent.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from clusternet_aa.agent.agent import Agent
from clusternet_aa.agent.settings import (
    AgentSettings,
    LeaderElection,
    SettingsError,
    parse_feature_gates,
    parse_labels,
)
from clusternet_aa.cli.argtypes import parse_bool, parse_duration
from clusternet_aa.cli.hub import configure_logging
from clusternet_aa.errors import ClusternetError

log = logging.getLogger("clusternet_aa.cli.agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clusternet-agent", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--cluster-reg-parent-url", default="", help="the parent cluster's kube-apiserver URL")
    add("--cluster-reg-token", default="", help="bootstrap token to register with the parent")
    add("--cluster-reg-name", default="", help="cluster name (generated when empty)")
    add("--cluster-reg-name-prefix", default="clusternet-cluster",
        help="prefix of a generated cluster name")  # fmt: skip
    add("--cluster-reg-namespace", default="", help="desired dedicated namespace in the parent")
    add("--cluster-reg-type", default="StandardCluster", help="StandardCluster or EdgeCluster")
    add("--cluster-sync-mode", default="Pull", help="Push, Pull or Dual")
    add("--cluster-labels", default="", help="labels of the ManagedCluster, k1=v1,k2=v2")
    add("--cluster-reg-retry-period", type=parse_duration, default=5.0,
        help="registration retry and approval poll period (Clusternet: 5s)")  # fmt: skip
    add("--labels-aggregate-threshold", type=float, default=0.8,
        help="share of worker nodes a label needs to be aggregated")  # fmt: skip
    add("--labels-aggregate-prefix", action="append", default=None,
        help="node label prefix to aggregate (repeatable; node.clusternet.io/)")  # fmt: skip
    add("--cluster-status-update-frequency", type=parse_duration, default=180.0,
        help="how often the status is reported (heartbeat), e.g. 3m")  # fmt: skip
    add("--cluster-status-collect-frequency", type=parse_duration, default=20.0,
        help="how often the status is collected, e.g. 20s")  # fmt: skip
    add("--kubeconfig", type=Path, help="the child cluster (in-cluster config when absent)")
    add("--kube-api-qps", type=float, default=5.0, help="reported to the parent as kubeQPS")
    add("--kube-api-burst", type=int, default=10, help="reported to the parent as kubeBurst")
    add("--predictor-addr", default="", help="reported as predictorAddress")
    add("--predictor-direct-access", type=parse_bool, nargs="?", const=True, default=False)
    add("--leader-elect", type=parse_bool, nargs="?", const=True, default=True)
    add("--leader-elect-resource-namespace", default="clusternet-system",
        help="namespace of the Lease (and of the parent-cluster Secret)")  # fmt: skip
    add("--leader-elect-resource-name", default="clusternet-agent")
    add("--leader-elect-resource-lock", default="leases", help="only leases is supported")
    add("--leader-elect-identity", default="", help="candidate identity (default hostname_uuid)")
    add("--leader-elect-lease-duration", type=parse_duration, default=15.0)
    add("--leader-elect-renew-deadline", type=parse_duration, default=10.0)
    add("--leader-elect-retry-period", type=parse_duration, default=2.0)
    add("--feature-gates", default="",
        help="A=true,B=false (SocketConnection, AppPusher, Recovery, Predictor, "
             "MultiClusterService)")  # fmt: skip
    add("--dial-allow", action="append", default=[],
        help="extra host:port the hub may dial through this agent (repeatable)")  # fmt: skip
    add("--hub-url", default="", help="dial the hub directly instead of via the parent")
    add("--hub-ca-file", type=Path, help="CA of the hub's certificate (with --hub-url)")
    # Hidden (documented in docs/operations.md): tests shorten the keepalive.
    add("--tunnel-keepalive-interval", type=parse_duration, default=15.0, help=argparse.SUPPRESS)
    add("--tunnel-keepalive-misses", type=int, default=3, help=argparse.SUPPRESS)
    add("-v", "--v", dest="verbosity", type=int, default=0, help="log level (klog style)")
    add("--log-format", choices=("text", "json"), default="text")
    return p


def settings_from_args(args: argparse.Namespace) -> AgentSettings:
    if args.leader_elect_resource_lock not in ("leases", "lease"):
        raise SettingsError("--leader-elect-resource-lock: only leases is supported")
    settings = AgentSettings(
        parent_url=args.cluster_reg_parent_url,
        bootstrap_token=args.cluster_reg_token,
        cluster_name=args.cluster_reg_name,
        cluster_name_prefix=args.cluster_reg_name_prefix,
        cluster_namespace=args.cluster_reg_namespace,
        cluster_type=args.cluster_reg_type,
        sync_mode=args.cluster_sync_mode,
        cluster_labels=parse_labels(args.cluster_labels),
        labels_aggregate_prefixes=tuple(args.labels_aggregate_prefix or ("node.clusternet.io/",)),
        labels_aggregate_threshold=args.labels_aggregate_threshold,
        status_update_frequency=args.cluster_status_update_frequency,
        status_collect_frequency=args.cluster_status_collect_frequency,
        registration_retry_period=args.cluster_reg_retry_period,
        kubeconfig=args.kubeconfig,
        kube_api_qps=args.kube_api_qps,
        kube_api_burst=args.kube_api_burst,
        predictor_address=args.predictor_addr,
        predictor_direct_access=args.predictor_direct_access,
        leader_election=LeaderElection(
            enabled=args.leader_elect,
            namespace=args.leader_elect_resource_namespace,
            name=args.leader_elect_resource_name,
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        ),
        feature_gates=parse_feature_gates(args.feature_gates),
        dial_allow=tuple(args.dial_allow),
        hub_url=args.hub_url,
        hub_ca_file=args.hub_ca_file,
        tunnel_keepalive_interval=args.tunnel_keepalive_interval,
        tunnel_keepalive_misses=args.tunnel_keepalive_misses,
    )
    settings.validate()
    return settings


async def run(settings: AgentSettings, *, identity: str = "") -> None:
    """Run the agent until SIGTERM or SIGINT; the Lease is released on the way out."""
    loop = asyncio.get_running_loop()
    main = asyncio.ensure_future(Agent(settings, identity=identity or None).run())
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await main
    except asyncio.CancelledError:
        log.info("clusternet-agent stopped")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        parser.error(str(exc))  # exits 2, as kube's flag errors
    configure_logging(args.verbosity, args.log_format)
    try:
        uvloop.run(run(settings, identity=args.leader_elect_identity))
    except ClusternetError as exc:
        log.error("clusternet-agent: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
