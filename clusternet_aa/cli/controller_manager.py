"""``clusternet-controller-manager``: the parent's controllers (CRR approver, cluster lifecycle).

Flags follow Clusternet's (``--controllers``, ``--threadiness``, ``--feature-gates``, the
``--leader-elect*`` family) so that its manifests carry over; flags of parts not implemented
here (``--secure-port``, ``--anonymous-auth-supported``, ``--reserved-namespace``,
``--kube-api-qps``/``--kube-api-burst``, ``--cluster-api-kubeconfig``) are accepted and ignored.
Durations take Go's syntax (``15s``, ``1m30s``, ``500ms``) or plain seconds.

With ``--leader-elect`` (default) the controllers run only while this replica holds the Lease
``<--leader-elect-resource-namespace>/<--leader-elect-resource-name>``. SIGTERM or SIGINT stops
the controllers, releases the Lease and exits 0; losing the Lease exits 1 (as Kubernetes
components do, so that the pod restarts as a clean follower).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from clusternet_aa.apis import labels
from clusternet_aa.cli.argtypes import parse_bool, parse_duration
from clusternet_aa.cli.hub import configure_logging
from clusternet_aa.controllers.base import Controller
from clusternet_aa.controllers.lifecycle import ClusterLifecycle, LifecycleSettings
from clusternet_aa.controllers.registration import ApproverSettings, RegistrationApprover
from clusternet_aa.errors import ClusternetError
from clusternet_aa.flags import SettingsError, parse_feature_gates
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.leader_election import (
    LeaderElectionConfig,
    LeaderElector,
    default_identity,
)

log = logging.getLogger("clusternet_aa.cli.controller_manager")

PROG = "clusternet-controller-manager"

#: Controllers this implementation has, and Clusternet's others (accepted, not run).
IMPLEMENTED_CONTROLLERS = ("crrapprover", "clusterlifecycle")
KNOWN_CONTROLLERS = (*IMPLEMENTED_CONTROLLERS, "serviceimport", "deployer", "clusterdiscovery")

#: Gates and defaults. SocketConnection defaults to true here (Clusternet: false, but every
#: manifest turns it on), as in clusternet-hub.
FEATURE_GATES: Mapping[str, bool] = {
    "SocketConnection": True,
    "ClusterInit": False,
    "Deployer": False,
    "FeedInUseProtection": False,
    "FeedInventory": False,
    "MultiClusterService": False,
    "FailOver": False,
}


def enabled_controllers(spec: str) -> tuple[str, ...]:
    """Clusternet's ``--controllers``: ``*`` (all on by default), ``foo``, ``-foo``."""
    items = [part.strip() for part in spec.split(",") if part.strip()]
    star = "*" in items
    on: list[str] = []
    for name in KNOWN_CONTROLLERS:
        if f"-{name}" in items:
            continue
        if name in items or star:
            on.append(name)
    for item in items:
        bare = item.removeprefix("-")
        if item != "*" and bare not in KNOWN_CONTROLLERS:
            raise SettingsError(
                f"unknown controller {bare!r}; known: {', '.join(KNOWN_CONTROLLERS)}"
            )
    return tuple(name for name in on if name in IMPLEMENTED_CONTROLLERS)


@dataclass(frozen=True, kw_only=True)
class ControllerManagerSettings:
    kubeconfig: Path | None = None
    controllers: tuple[str, ...] = IMPLEMENTED_CONTROLLERS
    threadiness: int = 10
    feature_gates: Mapping[str, bool] = field(default_factory=lambda: dict(FEATURE_GATES))
    leader_elect: bool = True
    leader_election: LeaderElectionConfig = field(
        default_factory=lambda: LeaderElectionConfig(
            namespace=labels.SYSTEM_NAMESPACE, name=PROG, identity=default_identity()
        )
    )
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)

    def validate(self) -> None:
        if self.threadiness < 1:
            raise SettingsError("--threadiness must be at least 1")
        if self.lifecycle.grace_multiplier <= 0:
            raise SettingsError("--cluster-lifecycle-grace-multiplier must be positive")
        if self.leader_elect:
            try:
                self.leader_election.validate()
            except ValueError as exc:
                raise SettingsError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--kubeconfig", type=Path, help="the parent cluster (in-cluster config when absent)")
    known = ", ".join(KNOWN_CONTROLLERS)
    add("--controllers", default="*", help=f"controllers to run: '*', 'foo', '-foo' ({known})")
    add("--threadiness", type=int, default=10, help="concurrent reconciles per controller")
    add("--feature-gates", default="", help="A=true,B=false (" + ", ".join(FEATURE_GATES) + ")")
    add("--leader-elect", type=parse_bool, nargs="?", const=True, default=True,
        help="run the controllers only while holding the leader Lease")  # fmt: skip
    add("--leader-elect-lease-duration", type=parse_duration, default=15.0)
    add("--leader-elect-renew-deadline", type=parse_duration, default=10.0)
    add("--leader-elect-retry-period", type=parse_duration, default=2.0)
    add("--leader-elect-resource-lock", default="leases", choices=("leases",),
        help=argparse.SUPPRESS)  # fmt: skip
    add("--leader-elect-resource-namespace", default=labels.SYSTEM_NAMESPACE)
    add("--leader-elect-resource-name", default=PROG)
    add("--leader-elect-identity", default="", help="candidate identity (default hostname_uuid)")
    add("--cluster-lifecycle-grace-multiplier", type=float, default=3.0,
        help="missed heartbeats before a cluster is Ready=Unknown (Clusternet: 3)")  # fmt: skip
    add("--cluster-default-heartbeat-frequency", type=parse_duration, default=180.0,
        help="heartbeat period assumed when a cluster reports none")  # fmt: skip
    # accepted for Clusternet's manifests; not used by this implementation
    for flag in ("--secure-port", "--anonymous-auth-supported", "--reserved-namespace",
                 "--kube-api-qps", "--kube-api-burst", "--cluster-api-kubeconfig",
                 "--bind-address"):  # fmt: skip
        add(flag, nargs="?", const="", help=argparse.SUPPRESS)
    add("-v", "--v", dest="verbosity", type=int, default=2, help="log level (klog style)")
    add("--log-format", choices=("text", "json"), default="text")
    return p


def settings_from_args(args: argparse.Namespace) -> ControllerManagerSettings:
    gates = parse_feature_gates(args.feature_gates, FEATURE_GATES)
    settings = ControllerManagerSettings(
        kubeconfig=args.kubeconfig,
        controllers=enabled_controllers(args.controllers),
        threadiness=args.threadiness,
        feature_gates=gates,
        leader_elect=args.leader_elect,
        leader_election=LeaderElectionConfig(
            namespace=args.leader_elect_resource_namespace,
            name=args.leader_elect_resource_name,
            identity=args.leader_elect_identity or default_identity(),
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        ),
        lifecycle=LifecycleSettings(
            grace_multiplier=args.cluster_lifecycle_grace_multiplier,
            default_heartbeat_seconds=args.cluster_default_heartbeat_frequency,
            workers=args.threadiness,
        ),
    )
    settings.validate()
    return settings


def build_controllers(kube: KubeClient, settings: ControllerManagerSettings) -> list[Controller]:
    controllers: list[Controller] = []
    if "crrapprover" in settings.controllers:
        approver = ApproverSettings(
            socket_connection=settings.feature_gates.get("SocketConnection", True),
            cluster_init=settings.feature_gates.get("ClusterInit", False),
            workers=settings.threadiness,
        )
        controllers.append(RegistrationApprover(kube, approver))
    if "clusterlifecycle" in settings.controllers:
        controllers.append(ClusterLifecycle(kube, settings.lifecycle))
    return controllers


class LeadershipLost(ClusternetError):
    """The Lease was lost: exit non-zero so the process restarts as a follower."""


async def run(settings: ControllerManagerSettings) -> None:
    """Run until SIGTERM/SIGINT (returns) or until leadership is lost (raises)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    kube = await KubeClient.from_kubeconfig(settings.kubeconfig)
    try:

        async def run_controllers() -> None:
            controllers = build_controllers(kube, settings)
            log.info("starting controllers: %s", ", ".join(c.name for c in controllers) or "none")
            if not controllers:
                await asyncio.Event().wait()
            await asyncio.gather(*(c.run() for c in controllers))

        if settings.leader_elect:
            elector = LeaderElector(
                kube, settings.leader_election, on_started_leading=run_controllers
            )
            main: asyncio.Task[None] = asyncio.create_task(elector.run(), name="leader election")
        else:
            main = asyncio.create_task(run_controllers(), name="controllers")
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("%s: shutting down", PROG)
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
            return
        stopping.cancel()
        main.result()  # a controller's failure surfaces here
        raise LeadershipLost("leader election lost")
    finally:
        await kube.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        parser.error(str(exc))  # exits 2, as kube's flag errors
    configure_logging(args.verbosity, args.log_format)
    try:
        uvloop.run(run(settings))
    except ClusternetError as exc:
        log.error("%s: %s", PROG, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
