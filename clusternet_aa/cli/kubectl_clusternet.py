"""``kubectl clusternet``: a kubectl plugin for clusters joined to a Clusternet hub.

    kubectl clusternet get clusters [-o wide|json|name]
    kubectl clusternet kubeconfig CLUSTER [--merge [--switch]] [--context-name NAME]
    kubectl clusternet --cluster CLUSTER -- KUBECTL-ARGS...

CLUSTER is a ManagedCluster's name, ``namespace/name``, or its cluster id. ``--kubeconfig`` and
``--context`` pick the parent cluster as for kubectl; ``-n`` is the ManagedClusters' namespace for
``get clusters`` and the child's namespace with ``--cluster``. Errors are one line on stderr;
logs (``-v 1`` or more) are one line per event, ``--log-format json`` for JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from clusternet_aa.plugin import clusters as clusters_mod
from clusternet_aa.plugin import kubeconfig as kubeconfig_mod
from clusternet_aa.plugin import logs
from clusternet_aa.plugin.kubectl import Kubectl, PluginError

PROG = "kubectl clusternet"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Clusters joined to a Clusternet hub: list them, reach them through the hub.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  kubectl clusternet get clusters\n"
            "  kubectl clusternet kubeconfig child-1 --merge --switch\n"
            "  kubectl clusternet --cluster child-1 -- get pods -A"
        ),
    )
    add = p.add_argument
    add("--kubeconfig", help="kubeconfig of the parent cluster")
    add("--context", help="kubeconfig context of the parent cluster")
    add("-n", "--namespace", help="ManagedClusters' namespace (get); child namespace (--cluster)")
    add("--cluster", help="run kubectl in this child cluster with the arguments after --")
    add("-v", "--v", dest="verbosity", type=int, default=0, help="log level: 1 info, 4 debug")
    add("--log-format", choices=("text", "json"), default="text")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    get = sub.add_parser("get", help="list clusters")
    get.add_argument("what", choices=("clusters", "cluster", "managedclusters", "mcls"))
    get.add_argument("-o", "--output", choices=("table", "wide", "json", "name"), default="table")
    get.add_argument("--no-probe", action="store_true", help="do not probe tunnels (TUNNEL -)")
    config = sub.add_parser("kubeconfig", help="a kubeconfig context reaching a child")
    config.add_argument("target", metavar="CLUSTER", help="name, namespace/name or cluster id")
    config.add_argument("--merge", action="store_true", help="add it to the current kubeconfig")
    config.add_argument("--switch", action="store_true", help="with --merge: use it now")
    config.add_argument("--context-name", help="context name (default: the cluster's name)")
    return p


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str] | None]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


async def get_clusters(kubectl: Kubectl, args: argparse.Namespace) -> str:
    found = await clusters_mod.list_clusters(kubectl, args.namespace)
    if not found:
        where = f"namespace {args.namespace}" if args.namespace else "any namespace"
        logs.event(logging.WARNING, f"no ManagedClusters in {where}")
        return "" if args.output != "json" else "[]\n"
    if args.no_probe:
        found = [clusters_mod.Cluster(**{**c.__dict__, "tunnel": "-"}) for c in found]
    else:
        found = await clusters_mod.with_tunnels(kubectl, found)
    return clusters_mod.render(found, args.output)


async def child_config(kubectl: Kubectl, ref: str, context_name: str | None) -> tuple[dict, str]:  # type: ignore[type-arg]
    cluster, parent = await asyncio.gather(
        clusters_mod.find_cluster(kubectl, ref), kubeconfig_mod.current(kubectl)
    )
    name = context_name or cluster.name
    logs.event(logging.INFO, "child context", cluster=cluster.name, id=cluster.cluster_id)
    return kubeconfig_mod.child_kubeconfig(parent, cluster, name), name


async def kubeconfig_command(kubectl: Kubectl, args: argparse.Namespace) -> str:
    document, name = await child_config(kubectl, args.target, args.context_name)
    if not args.merge:
        if args.switch:
            raise PluginError("--switch needs --merge")
        return yaml.safe_dump(document, sort_keys=False)
    path = kubeconfig_mod.target_file(args.kubeconfig)
    outcome = kubeconfig_mod.merge(path, document, switch=args.switch)
    logs.event(logging.INFO, "merged", file=str(path), context=name, outcome=outcome)
    return f'context "{name}" {outcome} in {path}\n'


def run_in_child(kubectl: Kubectl, document: dict, namespace: str | None, rest: list[str]) -> int:  # type: ignore[type-arg]
    """kubectl with a temporary kubeconfig for the child; stdin/stdout/stderr are the user's."""
    with tempfile.TemporaryDirectory(prefix="kubectl-clusternet-") as tmp:
        path = Path(tmp) / "kubeconfig"
        kubeconfig_mod.write(path, document)
        argv = [kubectl.binary, f"--kubeconfig={path}"]
        if namespace:
            argv += ["-n", namespace]
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child gets ^C itself
        try:
            return subprocess.call([*argv, *rest])
        finally:
            signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mine, rest = split_passthrough(argv)
    parser = build_parser()
    args = parser.parse_args(mine)
    logs.configure(args.log_format, args.verbosity)
    try:
        kubectl = Kubectl(kubeconfig=args.kubeconfig, context=args.context)
        if args.cluster is not None:
            if args.command is not None or rest is None:
                raise PluginError("usage: kubectl clusternet --cluster NAME -- KUBECTL-ARGS...")
            document, _ = asyncio.run(child_config(kubectl, args.cluster, None))
            return run_in_child(kubectl, document, args.namespace, rest)
        if rest is not None:
            raise PluginError("arguments after -- need --cluster NAME")
        if args.command == "get":
            out = asyncio.run(get_clusters(kubectl, args))
        elif args.command == "kubeconfig":
            out = asyncio.run(kubeconfig_command(kubectl, args))
        else:
            parser.print_help(sys.stderr)
            return 2
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
