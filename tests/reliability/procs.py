"""Helper processes for the reliability tests (``python -m tests.reliability.procs <role>``).

* ``agents``: many lightweight agents in one process: one :class:`TunnelClient` per cluster id,
  each with its own websocket to the hub, all sharing one :class:`Executor` (towards a kubesim
  child and/or the backend below). Every tunnel going up or down is appended to ``--events`` as
  a JSON line with a wall-clock timestamp; ``GET /stats`` on the port written to ``--port-file``
  answers the process's asyncio task count, open file descriptors and each session's open
  streams.
* ``backend``: an HTTP server the agents may reach (``--dial-allow``): large and slow bodies,
  a response reset in the middle, a head that never comes. Its port goes to ``--port-file``.
* ``hub``: ``clusternet-hub``'s own ``main`` plus one debug route, ``GET /debug/reliability``
  (authenticated like any other path): the hub process's asyncio task count and each tunnel's
  open streams, which ``/metrics`` does not show.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import ssl
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.proxy.dialer import allow_addresses
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.session import Session


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _serve(app: web.Application, port_file: Path) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    return runner


# ------------------------------------------------------------------------------ agents


class Watcher:
    """Polls every client's state and logs transitions (the clients have no callbacks)."""

    def __init__(self, clients: dict[str, TunnelClient], events: Path) -> None:
        self.clients = clients
        self.events = events.open("a", buffering=1)
        self.up: dict[str, Session] = {}

    def emit(self, **entry: Any) -> None:
        self.events.write(json.dumps({"t": time.time(), **entry}) + "\n")

    async def run(self) -> None:
        while True:
            for cid, client in self.clients.items():
                session = client.session
                live = (
                    client.connected.is_set()
                    and session is not None
                    and not session.is_closed
                    and not session.is_draining
                )
                old = self.up.get(cid)
                if old is not None and (old is not session or old.is_closed or not live):
                    code = old.close_code
                    self.emit(
                        ev="down",
                        id=cid,
                        code=code.name if code is not None else None,
                        reason=old.close_reason,
                        streams=old.open_streams,
                    )
                    del self.up[cid]
                if live and cid not in self.up and session is not None:
                    self.up[cid] = session
                    self.emit(ev="up", id=cid, n=client.connects)
            await asyncio.sleep(0.01)


async def run_agents(args: argparse.Namespace) -> None:
    ids = [i for i in args.ids.split(",") if i] if args.ids else []
    ids += [f"{args.id_prefix}-{i:05d}" for i in range(args.first, args.first + args.count)]
    hub_ssl = ssl.create_default_context(cafile=args.hub_ca_file)
    child_ssl = None
    if args.child_ca_file:
        child_ssl = ssl.create_default_context(cafile=args.child_ca_file)
    child_url = args.child_url or "https://127.0.0.1:1"
    executor = Executor(
        ChildApiserver(url=child_url, ssl_context=child_ssl, token=lambda: args.child_token),
        dial_policy=allow_addresses([ChildApiserver(url=child_url).address, *args.dial_allow]),
    )
    settings = Settings(
        keepalive_interval=args.keepalive_interval, keepalive_misses=args.keepalive_misses
    )
    backoff = Backoff(initial=args.backoff_initial, maximum=args.backoff_max)
    rng = random.Random()
    async with executor:
        clients = {
            cid: TunnelClient(
                tunnel_url(args.hub_url, cid),
                executor,
                token=lambda: args.token,
                ssl_context=hub_ssl,
                settings=settings,
                backoff=backoff,
                rng=random.Random(rng.random()),
            )
            for cid in ids
        }
        watcher = Watcher(clients, Path(args.events))

        async def stats(_: web.Request) -> web.Response:
            sessions = {
                cid: {"open_streams": c.session.open_streams, "closed": c.session.is_closed}
                for cid, c in clients.items()
                if c.session is not None
            }
            return web.json_response(
                {
                    "tasks": len(asyncio.all_tasks()),
                    "fds": _fds(),
                    "connected": sum(c.connected.is_set() for c in clients.values()),
                    "sessions": sessions,
                }
            )

        app = web.Application()
        app.router.add_get("/stats", stats)
        runner = await _serve(app, Path(args.port_file))
        tasks = [asyncio.ensure_future(watcher.run())]
        for client in clients.values():
            tasks.append(asyncio.ensure_future(client.run()))
            if args.stagger:
                await asyncio.sleep(args.stagger)
        try:
            await asyncio.gather(*tasks)
        finally:
            await runner.cleanup()


# ------------------------------------------------------------------------------ backend


async def blob(request: web.Request) -> web.StreamResponse:
    """``size`` bytes in ``chunk``-sized writes, ``delay`` seconds apart; ``head_delay`` first."""
    size = int(request.query.get("size", "1024"))
    chunk = int(request.query.get("chunk", "65536"))
    delay = float(request.query.get("delay", "0"))
    await asyncio.sleep(float(request.query.get("head_delay", "0")))
    response = web.StreamResponse()
    response.content_length = size
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    block = b"x" * chunk
    sent = 0
    while sent < size:
        part = block[: min(chunk, size - sent)]
        await response.write(part)
        sent += len(part)
        if delay:
            await asyncio.sleep(delay)
    await response.write_eof()
    return response


async def reset(request: web.Request) -> web.StreamResponse:
    """Announce ``size`` bytes, send ``after`` of them, then abort the connection."""
    size = int(request.query.get("size", "1048576"))
    after = int(request.query.get("after", "1000"))
    response = web.StreamResponse()
    response.content_length = size
    await response.prepare(request)
    await response.write(b"r" * after)
    await asyncio.sleep(float(request.query.get("delay", "0")))
    assert request.transport is not None
    request.transport.abort()
    return response


async def hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise web.HTTPNoContent()


async def run_backend(args: argparse.Namespace) -> None:
    app = web.Application()
    app.router.add_get("/blob", blob)
    app.router.add_get("/reset", reset)
    app.router.add_get("/hang", hang)
    await _serve(app, Path(args.port_file))
    await asyncio.Event().wait()


# ------------------------------------------------------------------------------ hub


def run_hub(argv: list[str]) -> int:
    from clusternet_aa.cli import hub as hub_cli
    from clusternet_aa.hub.app import Hub, add_socket_routes

    def routes(app: web.Application, hub: Hub) -> None:
        add_socket_routes(app, hub)

        async def debug(request: web.Request) -> web.Response:
            sessions = hub.tunnels._sessions
            if request.query.get("gc"):
                gc.collect()
            if request.query.get("trim"):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            return web.json_response(
                {
                    "tasks": len(asyncio.all_tasks()),
                    "fds": _fds(),
                    "tunnels": len(sessions),
                    "open_streams": sum(s.open_streams for s in sessions.values()),
                    "allocated_blocks": sys.getallocatedblocks(),
                    "gc_objects": len(gc.get_objects()),
                    "top_types": Counter(type(o).__name__ for o in gc.get_objects()).most_common(
                        int(request.query.get("top", "0"))
                    ),
                }
            )

        app.router.add_get("/debug/reliability", debug)

    return hub_cli.main(argv, extra_routes=routes)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "hub":
        return run_hub(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="procs")
    sub = parser.add_subparsers(dest="role", required=True)
    agents = sub.add_parser("agents")
    add = agents.add_argument
    add("--hub-url", required=True)
    add("--hub-ca-file", required=True)
    add("--token", required=True)
    add("--ids", default="")
    add("--id-prefix", default="lw")
    add("--first", type=int, default=0)
    add("--count", type=int, default=0)
    add("--child-url", default="")
    add("--child-ca-file", default="")
    add("--child-token", default="")
    add("--dial-allow", action="append", default=[])
    add("--keepalive-interval", type=float, default=15.0)
    add("--keepalive-misses", type=int, default=3)
    add("--backoff-initial", type=float, default=1.0)
    add("--backoff-max", type=float, default=30.0)
    add("--stagger", type=float, default=0.0)
    add("--events", required=True)
    add("--port-file", required=True)
    backend = sub.add_parser("backend")
    backend.add_argument("--port-file", required=True)
    args = parser.parse_args()
    if args.role == "agents":
        uvloop.run(run_agents(args))
    else:
        uvloop.run(run_backend(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
