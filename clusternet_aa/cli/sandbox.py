"""``clusternet-sandbox``: a parent and N child clusters joined through the hub, on 127.0.0.1.

Starts, as separate processes: a kubesim parent (with aggregation), N kubesim children (pods run
as local processes), the hub (registered through the APIService in manifests/), the
controller-manager, and one agent per child (``child-1`` ... ``child-N``) joining with a
bootstrap token. Writes ``<state-dir>/kubeconfig`` (contexts ``parent``, ``child-N`` and
``alice@child-N``), prints what to try, and stops everything on Ctrl-C. ``--down`` stops a
sandbox running in the state directory (from another terminal, or after a crash) by the PIDs it
recorded in ``<state-dir>/pids.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from clusternet_aa.sandbox import fleet


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 20:
        raise argparse.ArgumentTypeError("between 1 and 20")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clusternet-sandbox", description=__doc__.split("\n")[0])
    add = p.add_argument
    add("--clusters", type=_positive, default=2, help="child clusters to start (default 2)")
    add("--state-dir", type=Path, default=Path(".sandbox"),
        help="kubeconfig, logs, certificates and pids.json (default .sandbox)")  # fmt: skip
    add("--down", action="store_true", help="stop the sandbox running in --state-dir")
    add("--manifests", type=Path, default=fleet.SandboxOptions.manifests,
        help="the repo's manifests/ directory (default: the one next to this package)")  # fmt: skip
    add("--timeout", type=float, default=90.0, help="seconds the bring-up may take")
    add("--once", action="store_true", help="stop again as soon as it is ready (a smoke check)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state = args.state_dir.absolute()
    if args.down:
        return asyncio.run(fleet.down(state, fleet.Progress(sys.stdout)))
    if not (args.manifests / "hub" / "kustomization.yaml").exists():
        print(f"clusternet-sandbox: no manifests in {args.manifests} (use --manifests)")
        return 2
    options = fleet.SandboxOptions(
        state_dir=state,
        clusters=args.clusters,
        manifests=args.manifests.absolute(),
        timeout=args.timeout,
    )
    try:
        return asyncio.run(fleet.run(options, sys.stdout, once=args.once))
    except KeyboardInterrupt:  # a second Ctrl-C while stopping
        return 130


if __name__ == "__main__":
    sys.exit(main())
