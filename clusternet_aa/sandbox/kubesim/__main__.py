"""``python -m clusternet_aa.sandbox.kubesim``: run one kubesim instance until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer

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
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = KubesimConfig(
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
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
