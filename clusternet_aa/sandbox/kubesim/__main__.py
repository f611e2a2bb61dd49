"""``python -m clusternet_aa.sandbox.kubesim``: run one kubesim instance until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvloop

from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.types import UserInfo

logger = logging.getLogger("clusternet_aa.sandbox.kubesim")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="clusternet-kubesim",
        description="A simulated Kubernetes API server for tests and demos (not a real store).",
    )
    parser.add_argument("--port", type=int, default=6443, help="HTTPS port (0: pick one)")
    parser.add_argument("--bind-address", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=None, help="also serve plain HTTP")
    parser.add_argument("--state-dir", type=Path, required=True, help="kubeconfig and CA files")
    parser.add_argument("--git-version", default="v1.37.0", help="what /version reports")
    parser.add_argument("--nodes", type=int, default=2, help="simulated nodes to register")
    parser.add_argument("--token", default="", help="admin bearer token (random by default)")
    parser.add_argument(
        "--no-anonymous", action="store_true", help="refuse requests without credentials"
    )
    parser.add_argument(
        "--token-auth-file",
        type=Path,
        help='static bearer tokens, as kube-apiserver reads them: token,user,uid,"g1,g2"',
    )
    parser.add_argument(
        "--pod-runtime-dir",
        type=Path,
        help="run pods as real local processes with working directories under this one",
    )
    parser.add_argument(
        "--apiservice-resync-seconds",
        type=float,
        default=30.0,
        help="how often APIService availability is probed",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def read_token_file(path: Path) -> dict[str, UserInfo]:
    """kube-apiserver's ``--token-auth-file``: CSV rows of token, user, uid and optional groups."""
    tokens: dict[str, UserInfo] = {}
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 3:
                raise SystemExit(f'{path}:{number}: expected token,user,uid[,"groups"]')
            groups = (
                tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            )
            tokens[row[0]] = UserInfo(name=row[1], uid=row[2], groups=groups)
    return tokens


async def serve(args: argparse.Namespace) -> None:
    config = KubesimConfig(
        static_tokens=read_token_file(args.token_auth_file) if args.token_auth_file else {},
        pod_runtime=PodRuntimeConfig(workdir=args.pod_runtime_dir)
        if args.pod_runtime_dir
        else None,
        apiservice_resync_seconds=args.apiservice_resync_seconds,
        host=args.bind_address,
        port=args.port,
        http_port=args.http_port,
        git_version=args.git_version,
        state_dir=args.state_dir,
        nodes=args.nodes,
        admin_token=args.token,
        allow_anonymous=not args.no_anonymous,
    )
    server = KubesimServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    logger.info(
        "kubesim serving %s; kubeconfig %s", server.url, args.state_dir / "admin.kubeconfig"
    )
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
