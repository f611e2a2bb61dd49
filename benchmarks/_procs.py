"""The separate processes of the tunnel benchmark: ``python -m benchmarks._procs ROLE ...``.

Roles (each runs on uvloop and prints one JSON line on stdout once it is ready):

``target``  the far end of every path: a :class:`~benchmarks._common.BenchServer` on plain TCP
            and on TLS.
``hub``     an aiohttp TLS server accepting tunnel sessions, plus a plain-HTTP control port on
            127.0.0.1 through which the driver starts a local forward (``serve_forward``), runs
            the in-process head-of-line scenario, and reads RSS and tracemalloc figures.
``agent``   dials the hub; driven by line commands on stdin (``connect N``, ``close``, ``rss``),
            so the same role is the single bulk agent and the swarm of idle sessions. Its stream
            handler serves DialTarget("bench", source|echo|stats) in-process and relays
            DialTarget("tcp", ...) to allow-listed sockets like the real agent.

``BENCH_PROFILE_DIR=dir`` makes each process run under cProfile and write ``dir/ROLE-PID.prof``
when it is told to stop (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import signal
import ssl
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from aiohttp import web

from benchmarks._common import BenchServer, commands, percentile, raise_fd_limit, rss_bytes
from clusternet_aa.proxy.dialer import Dialer, allow_addresses
from clusternet_aa.proxy.local_forward import serve_forward
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.session import DEFAULT_HIGH_WATER, Session
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream
from clusternet_aa.tunnel.websocket import accept, connect, offered_subprotocol

SOURCE_BLOB = bytes(range(256)) * 256  # 64 KiB, one full DATA frame


def _ready(info: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()


def _settings() -> Settings:
    """Default settings, unless BENCH_STREAM_WINDOW (bytes) overrides the stream window."""
    window = os.environ.get("BENCH_STREAM_WINDOW")
    return Settings(initial_stream_window=int(window)) if window else Settings()


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


# ---------------------------------------------------------------------- target


async def target_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(Path(args.certs) / "server.pem")
    plain = await loop.create_server(BenchServer, "127.0.0.1", 0)
    tls = await loop.create_server(BenchServer, "127.0.0.1", 0, ssl=server_ssl)
    stop = _stop_event()
    _ready(
        {
            "tcp_port": plain.sockets[0].getsockname()[1],
            "tls_port": tls.sockets[0].getsockname()[1],
        }
    )
    await stop.wait()
    plain.close()
    tls.close()


# ---------------------------------------------------------------------- hub


class Hub:
    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.changed = asyncio.Event()
        self.forward: asyncio.Server | None = None

    def _changed(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def tunnel(self, request: web.Request) -> web.StreamResponse:
        if offered_subprotocol(request) is None:
            return web.Response(status=400, text="no tunnel subprotocol offered")
        ws, session = await accept(request, name="bench-hub", settings=_settings())
        session.start()
        try:
            await session.wait_ready()
            self.sessions.append(session)
            self._changed()
            await session.wait_closed()
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
                self._changed()
        return ws

    # ------------------------------------------------------------ control endpoints

    async def wait(self, request: web.Request) -> web.Response:
        want = int(request.query.get("sessions", "1"))
        timeout = float(request.query.get("timeout", "60"))
        async with asyncio.timeout(timeout):
            while len(self.sessions) != want:
                await self.changed.wait()
        return web.json_response({"sessions": len(self.sessions)})

    async def start_forward(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.forward is None:
            self.forward = await serve_forward(
                lambda: self.sessions[0] if self.sessions else None,
                frames.DialTarget("tcp", body["target"]),
            )
        return web.json_response({"port": self.forward.sockets[0].getsockname()[1]})

    async def memory(self, request: web.Request) -> web.Response:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        return web.json_response(
            {"rss": rss_bytes(), "traced": traced, "sessions": len(self.sessions)}
        )

    async def tracemalloc_start(self, request: web.Request) -> web.Response:
        gc.collect()
        tracemalloc.start(int(request.query.get("frames", "1")))
        gc.collect()
        return web.json_response({"traced": tracemalloc.get_traced_memory()[0]})

    async def tracemalloc_snapshot(self, request: web.Request) -> web.Response:
        """Take a baseline snapshot (``?base=1``) or compare with it: the top allocation sites."""
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        if request.query.get("base"):
            self._base = snapshot
            return web.json_response({})
        stats = snapshot.compare_to(self._base, "lineno")
        top = [
            {"where": str(stat.traceback[0]), "size_diff": stat.size_diff, "count": stat.count_diff}
            for stat in stats[: int(request.query.get("top", "25"))]
        ]
        # Allocations whose innermost Python frame is the event loop's run call were made by C
        # code (uvloop's per-connection SSL read buffer, PyMem_RawMalloc'd and mostly untouched).
        loop_frame = sum(
            stat.size_diff
            for stat in stats
            if stat.traceback[0].filename.endswith(("asyncio/runners.py", "uvloop/__init__.py"))
        )
        return web.json_response({"top": top, "loop_frame_bytes": loop_frame})

    async def hol(self, request: web.Request) -> web.Response:
        body = await request.json()
        session = self.sessions[0]
        result = await run_hol(
            session,
            streams=body["streams"],
            round_trips=body["round_trips"],
            size=body["size"],
            stall=body["stall"],
        )
        return web.json_response(result)


async def _open(session: Session, address: str) -> TunnelStream:
    stream = await session.open_stream(frames.DialTarget("bench", address))
    head = await stream.response()
    assert head.status == 200, head
    return stream


async def run_hol(
    session: Session, *, streams: int, round_trips: int, size: int, stall: bool
) -> dict[str, Any]:
    """``streams`` streams do ``round_trips`` sequential echo round trips of ``size`` bytes each,
    all at once; with ``stall``, a stream whose reader never reads is filled first."""
    window = session._conn.local_settings.initial_stream_window
    stalled: TunnelStream | None = None
    result: dict[str, Any] = {"stall": stall, "window": window, "high_water": DEFAULT_HIGH_WATER}
    if stall:
        stalled = await _open(session, "source")
        started = time.monotonic()
        for _ in range(1000):  # up to 10 s for the window to fill
            if stalled.buffered >= window:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # let anything in flight land
        result["stalled_fill_seconds"] = round(time.monotonic() - started, 3)
    echo = await asyncio.gather(*(_open(session, "echo") for _ in range(streams)))
    payload = os.urandom(size)
    latencies: list[float] = []

    async def worker(stream: TunnelStream, count: int, record: bool) -> None:
        for _ in range(count):
            start = time.perf_counter()
            stream.write(payload)
            await stream.drain()
            reply = await stream.readexactly(size)
            if record:
                latencies.append(time.perf_counter() - start)
            assert reply == payload

    await asyncio.gather(*(worker(s, 3, False) for s in echo))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker(s, round_trips, True) for s in echo))
    elapsed = time.perf_counter() - started
    result.update(
        {
            "round_trips": len(latencies),
            "seconds": elapsed,
            "p50_ms": percentile(latencies, 50) * 1e3,
            "p90_ms": percentile(latencies, 90) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3,
            "max_ms": max(latencies) * 1e3,
        }
    )
    if stalled is not None:
        result["receiver_buffered"] = stalled.buffered
        stats_stream = await _open(session, "stats")
        chunks = [chunk async for chunk in stats_stream]
        sender = json.loads(b"".join(chunks))
        result["sender_queued"] = sender.get(str(stalled.stream_id))
        result["stalled_stream_id"] = stalled.stream_id
        stalled.reset(ErrorCode.CANCEL, "benchmark done")
    for stream in echo:
        stream.write_eof()
    for stream in echo:
        with contextlib.suppress(StreamResetError):
            while await stream.read():
                pass
    return result


async def hub_main(args: argparse.Namespace) -> None:
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(Path(args.certs) / "server.pem")
    hub = Hub()
    app = web.Application()
    app.router.add_get("/tunnel", hub.tunnel)
    control = web.Application()
    control.router.add_get("/wait", hub.wait)
    control.router.add_post("/forward", hub.start_forward)
    control.router.add_get("/memory", hub.memory)
    control.router.add_post("/tracemalloc/start", hub.tracemalloc_start)
    control.router.add_post("/tracemalloc/snapshot", hub.tracemalloc_snapshot)
    control.router.add_post("/hol", hub.hol)
    runners = []
    ports = []
    for application, context in ((app, server_ssl), (control, None)):
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=4096)
        await site.start()
        runners.append(runner)
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    stop = _stop_event()
    _ready({"tunnel_url": f"wss://127.0.0.1:{ports[0]}/tunnel", "control_port": ports[1]})
    await stop.wait()
    for session in list(hub.sessions):
        await session.close(ErrorCode.CANCEL, grace=1)
    for runner in runners:
        await runner.cleanup()


# ---------------------------------------------------------------------- agent


class BenchHandler:
    """Agent-side stream handler: in-process bench targets, else the real allow-listed dialer."""

    def __init__(self, dialer: Dialer) -> None:
        self._dialer = dialer
        self._sources: dict[int, TunnelStream] = {}

    async def __call__(self, stream: TunnelStream) -> None:
        target = stream.target
        if not (isinstance(target, frames.DialTarget) and target.network == "bench"):
            await self._dialer(stream)
            return
        stream.send_headers(200)
        if target.address == "source":
            self._sources[stream.stream_id] = stream
            try:
                while True:
                    await stream.write_all(SOURCE_BLOB)
            finally:
                del self._sources[stream.stream_id]
        elif target.address == "echo":
            while data := await stream.read():
                stream.write(data)
                await stream.drain()
            stream.write_eof()
        elif target.address == "stats":
            queued = {
                str(sid): s._session._conn.outbound_buffered(sid)
                for sid, s in self._sources.items()
            }
            await stream.write_all(json.dumps(queued).encode())
            stream.write_eof()
        else:
            stream.reset(ErrorCode.REFUSED_STREAM, f"no bench target {target.address}")


async def agent_main(args: argparse.Namespace) -> None:
    client_ssl = ssl.create_default_context()
    client_ssl.load_verify_locations(Path(args.certs) / "ca.pem")
    handler = BenchHandler(Dialer(allow_addresses(args.allow or [])))
    sessions: list[Session] = []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stop = _stop_event()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def dial() -> None:
            session = await connect(
                client,
                args.url,
                ssl_context=client_ssl,
                handler=handler,
                name="bench-agent",
                settings=_settings(),
            )
            await session.wait_ready()
            sessions.append(session)

        _ready({"pid": os.getpid()})
        async for line in commands(reader, stop):
            reply: dict[str, Any] = {}
            if line[0] == "connect":
                count = int(line[1])
                for start in range(0, count, 50):
                    await asyncio.gather(*(dial() for _ in range(min(50, count - start))))
                gc.collect()
                reply = {"sessions": len(sessions), "rss": rss_bytes()}
            elif line[0] == "close":
                await asyncio.gather(*(s.close(grace=2) for s in sessions))
                sessions.clear()
                gc.collect()
                reply = {"sessions": 0, "rss": rss_bytes()}
            elif line[0] == "rss":
                gc.collect()
                reply = {"sessions": len(sessions), "rss": rss_bytes()}
            _ready(reply)
        await asyncio.gather(*(s.close(ErrorCode.CANCEL, grace=1) for s in sessions))


# ---------------------------------------------------------------------- entry point


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._procs")
    parser.add_argument("role", choices=("target", "hub", "agent"))
    parser.add_argument("--certs", required=True, help="folder with ca.pem and server.pem")
    parser.add_argument("--url", help="agent: the hub's tunnel URL")
    parser.add_argument("--allow", action="append", help="agent: host:port it may dial")
    args = parser.parse_args()
    raise_fd_limit()
    entry = {"target": target_main, "hub": hub_main, "agent": agent_main}[args.role]
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    # CPU time, not wall time: the machine may be shared, and a descheduled process is not slow.
    profiler = cProfile.Profile(time.process_time) if profile_dir else None
    if profiler is not None:
        profiler.enable()
    try:
        uvloop.run(entry(args))
    finally:
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(Path(profile_dir) / f"{args.role}-{os.getpid()}.prof")


if __name__ == "__main__":
    main()
