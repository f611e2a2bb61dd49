"""The separate processes of the hub benchmark: ``python -m benchmarks._hub_procs ROLE ...``.

Roles (each runs on uvloop; all but ``hub`` print one JSON line on stdout once ready):

``hub``    the real ``clusternet-hub`` (its ``main``, same flags), plus one bench-only route,
           ``GET /debug/bench`` (behind the hub's own authentication), that reports the bytes
           the hub holds for each proxied stream: unread bytes at the tunnel stream
           (``TunnelStream.buffered``) and unsent bytes in the client connection's transport.
           ``BENCH_KEEPALIVE`` (seconds) sets the tunnel keepalive interval offered to agents.
``agent``  a real agent's proxy half: :class:`~clusternet_aa.proxy.executor.Executor` (pooled
           connection to the child's API server) behind a
           :class:`~clusternet_aa.agent.tunnel_client.TunnelClient` dialing the hub.
``swarm``  many lightweight agents in one process: tunnel sessions
           (:func:`~clusternet_aa.tunnel.websocket.connect`, the same wire as ``TunnelClient``
           without its redial loop), driven by stdin lines ``connect N PREFIX`` / ``rss`` /
           ``close``; with ``--child`` every session serves streams with one shared Executor.
``bulk``   an HTTPS/1.1 server for bulk bytes: ``GET /bytes/N`` sends N bytes,
           ``PUT /upload`` (Content-Length) reads the body and answers ``200``; keep-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import ssl
import sys
import tracemalloc
from typing import Any, cast

import aiohttp
import uvloop
from aiohttp import web

from benchmarks._common import CHUNK, commands, raise_fd_limit, rss_bytes
from clusternet_aa.agent.tunnel_client import Backoff, TunnelClient, tunnel_url
from clusternet_aa.proxy.executor import ChildApiserver, Executor
from clusternet_aa.tunnel import websocket
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.session import Session

_BLOB = bytes(range(256)) * (CHUNK // 256)


def _ready(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


def tunnel_settings() -> Settings:
    """Default settings, except BENCH_KEEPALIVE (seconds) and BENCH_STREAM_WINDOW (bytes)."""
    keepalive = os.environ.get("BENCH_KEEPALIVE")
    window = os.environ.get("BENCH_STREAM_WINDOW")
    defaults = Settings()
    return Settings(
        keepalive_interval=float(keepalive) if keepalive else defaults.keepalive_interval,
        initial_stream_window=int(window) if window else defaults.initial_stream_window,
    )


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _client_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(ca_file)
    return context


# ---------------------------------------------------------------------- hub


def hub_main(argv: list[str]) -> int:
    from clusternet_aa.cli import hub as hub_cli
    from clusternet_aa.hub.app import Hub
    from clusternet_aa.proxy import routes as proxy_routes

    # Transports of url-target requests (the bulk and stalled downloads); closed ones are
    # dropped whenever the debug route runs. (uvloop's SSL transports take no weak references.)
    proxied: set[asyncio.BaseTransport] = set()

    @web.middleware
    async def track(request: web.Request, handler: Any) -> web.StreamResponse:
        if "/proxy/https/" in request.path and request.transport is not None:
            proxied.add(request.transport)
        response: web.StreamResponse = await handler(request)
        return response

    def extra_routes(app: web.Application, hub: Hub) -> None:
        settings = proxy_routes.ProxySettings(
            tunnel_wait=hub.settings.tunnel_wait_seconds, tunnel=tunnel_settings()
        )
        proxy_routes.add_routes(
            app,
            registry=hub.tunnels,
            authorizer=hub.authorizer,
            directory=hub.directory,
            metrics=hub.metrics,
            settings=settings,
        )

        async def drain_tunnels(_: web.Application) -> None:
            await hub.tunnels.close_all(grace=hub.settings.shutdown_grace_seconds)

        app.on_shutdown.append(drain_tunnels)
        app.middlewares.append(track)

        async def debug(request: web.Request) -> web.Response:
            streams = []
            for cluster_id in hub.tunnels.connected():
                session = hub.tunnels.get(cluster_id)
                if session is None:
                    continue
                for stream_id, stream in list(session._streams.items()):
                    streams.append(
                        {"cluster": cluster_id, "stream": stream_id, "buffered": stream.buffered}
                    )
            proxied.difference_update([t for t in proxied if t.is_closing()])
            write_buffers = [
                t.get_write_buffer_size()
                for t in list(proxied)
                if isinstance(t, asyncio.WriteTransport) and not t.is_closing()
            ]
            return web.json_response(
                {
                    "tunnels": len(hub.tunnels.connected()),
                    "streams": streams,
                    "write_buffers": write_buffers,
                    "rss": rss_bytes(),
                }
            )

        snapshots: list[tracemalloc.Snapshot] = []

        async def trace_start(request: web.Request) -> web.Response:
            gc.collect()
            tracemalloc.start(int(request.query.get("frames", "8")))
            snapshots[:] = [tracemalloc.take_snapshot()]
            return web.json_response({})

        async def trace_diff(request: web.Request) -> web.Response:
            """Traced memory grown since ``start``, by allocation site (innermost frames)."""
            gc.collect()
            stats = tracemalloc.take_snapshot().compare_to(snapshots[0], "lineno")
            tracemalloc.stop()
            top = [
                {
                    "bytes": stat.size_diff,
                    "count": stat.count_diff,
                    "where": [
                        f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                        for f in reversed(stat.traceback)
                    ][:4],
                }
                for stat in stats[: int(request.query.get("n", "25"))]
            ]
            return web.json_response({"top": top, "total": sum(stat.size_diff for stat in stats)})

        app.router.add_get("/debug/bench", debug)
        app.router.add_post("/debug/bench/tracemalloc/start", trace_start)
        app.router.add_post("/debug/bench/tracemalloc/diff", trace_diff)

    return hub_cli.main(argv, extra_routes=extra_routes)


# ---------------------------------------------------------------------- agent


def _executor(args: argparse.Namespace) -> Executor:
    child_ssl = _client_context(args.child_ca)
    token = args.child_token
    allowed = {ChildApiserver(url=args.child).address, *(args.allow or [])}
    return Executor(
        ChildApiserver(url=args.child, ssl_context=child_ssl, token=lambda: token),
        dial_policy=lambda target: target.network == "tcp" and target.address in allowed,
    )


async def agent_main(args: argparse.Namespace) -> None:
    stop = _stop_event()
    async with _executor(args) as executor:
        client = TunnelClient(
            tunnel_url(args.hub, args.cluster),
            executor,
            token=lambda: args.token,
            ssl_context=_client_context(args.hub_ca),
            settings=tunnel_settings(),
            backoff=Backoff(initial=0.1, maximum=1.0),
        )
        task = asyncio.ensure_future(client.run())
        await asyncio.wait_for(client.connected.wait(), 30)
        _ready({"pid": os.getpid()})
        await stop.wait()
        client.stop()
        await asyncio.wait_for(task, 15)


# ---------------------------------------------------------------------- swarm


async def swarm_main(args: argparse.Namespace) -> None:
    stop = _stop_event()
    hub_ssl = _client_context(args.hub_ca)
    executor = _executor(args) if args.child else None
    if executor is not None:
        await executor.__aenter__()
    sessions: list[Session] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    headers = {"Authorization": f"Bearer {args.token}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def dial(cluster_id: str) -> None:
            session = await websocket.connect(
                client,
                tunnel_url(args.hub, cluster_id),
                ssl_context=hub_ssl,
                headers=headers,
                settings=tunnel_settings(),
                handler=executor,
                name=cluster_id,
                handshake_timeout=60,
            )
            await session.wait_ready()
            sessions.append(session)

        _ready({"pid": os.getpid()})
        async for words in commands(reader, stop):
            if words[0] == "connect":
                count, prefix = int(words[1]), words[2]
                start = len(sessions)
                for first in range(start, start + count, 64):
                    last = min(first + 64, start + count)
                    await asyncio.gather(*(dial(f"{prefix}-{i}") for i in range(first, last)))
            elif words[0] == "close":
                await asyncio.gather(*(s.close(grace=2) for s in sessions))
                sessions.clear()
            gc.collect()
            _ready({"sessions": len(sessions), "rss": rss_bytes()})
        await asyncio.gather(*(s.close(ErrorCode.CANCEL, grace=1) for s in sessions))
    if executor is not None:
        await executor.__aexit__(None, None, None)


# ---------------------------------------------------------------------- bulk HTTPS server


class BulkHttp(asyncio.Protocol):
    """HTTP/1.1 keep-alive: ``GET /bytes/N`` streams N bytes, ``PUT`` with a Content-Length
    reads the body and answers 200. Plain callbacks, no stream buffers."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._to_send = 0
        self._to_read = 0
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._pump()

    def _pump(self) -> None:
        transport = self._transport
        assert transport is not None
        while self._to_send > 0 and not self._paused:
            n = min(self._to_send, CHUNK)
            transport.write(_BLOB if n == CHUNK else _BLOB[:n])
            self._to_send -= n

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        while data:
            if self._to_read:
                used = min(self._to_read, len(data))
                self._to_read -= used
                data = data[used:]
                if self._to_read == 0:
                    transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            lines = head.split(b"\r\n")
            method, path = lines[0].split(b" ")[:2]
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(b":") for line in lines[1:])
            }
            if method == b"GET" and path.startswith(b"/bytes/"):
                size = int(path[len(b"/bytes/") :])
                transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % size
                )
                self._to_send = size
                self._pump()
            elif method in (b"PUT", b"POST"):
                self._to_read = int(fields.get(b"content-length", b"0"))
                if self._to_read == 0:
                    transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                transport.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


async def bulk_main(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BulkHttp, "127.0.0.1", 0, ssl=context)
    stop = _stop_event()
    _ready({"port": server.sockets[0].getsockname()[1]})
    await stop.wait()
    server.close()


# ---------------------------------------------------------------------- entry point


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "hub":
        raise_fd_limit()
        return hub_main(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks._hub_procs")
    parser.add_argument("role", choices=("agent", "swarm", "bulk"))
    parser.add_argument("--hub", help="the hub's https URL")
    parser.add_argument("--hub-ca", help="CA file of the hub's serving certificate")
    parser.add_argument("--token", help="the agent's bearer token at the hub")
    parser.add_argument("--cluster", help="agent: its cluster id")
    parser.add_argument("--child", help="the child API server's URL")
    parser.add_argument("--child-ca", help="CA file of the child")
    parser.add_argument("--child-token", help="the agent's token in the child")
    parser.add_argument("--allow", action="append", help="host:port a url target may reach")
    parser.add_argument("--cert", help="bulk: serving certificate")
    parser.add_argument("--key", help="bulk: its key")
    args = parser.parse_args()
    raise_fd_limit()
    entry = {"agent": agent_main, "swarm": swarm_main, "bulk": bulk_main}[args.role]
    uvloop.run(entry(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
