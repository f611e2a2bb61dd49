"""Tunnel benchmark: throughput, fairness, head-of-line isolation and idle memory, on loopback.

    python -m benchmarks.tunnel_bench [--quick | --tiny] [--rounds N] [--out FILE]

One run measures, side by side and in the same conditions:

1. bulk: one connection moving ``--bulk-mib`` MiB each way (download and upload) over
   plain TCP, one direct asyncio TLS connection, ``ssh -L`` (our own sshd; skipped with a note
   when OpenSSH's server is not installed), and the tunnel: a local TCP forward on the hub
   (``serve_forward``) through the TLS websocket to the agent, which dials the target;
2. ``--streams`` concurrent connections over each path: aggregate throughput and fairness;
3. head-of-line isolation inside the hub process: ``--streams`` echo streams doing small round
   trips, with and without one stream whose reader never reads;
4. memory per idle session: ``--sessions`` idle agent sessions to a fresh hub process.

Hub, agent, target and (for 4.) the swarm of agents are separate processes on uvloop
(``benchmarks/_procs.py``). Each figure is repeated ``--rounds`` times and reported as its
median with min/max and quartiles. The table ends with PASS/MISS per target of issue 2; the JSON
(``--out``) holds inputs, machine facts and every sample. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import trustme
import uvloop

from benchmarks._common import (
    MiB,
    jain,
    machine_facts,
    raise_fd_limit,
    summary,
    transfer,
)
from benchmarks._ssh import ForwardingSsh, start_ssh_forward

REPO = Path(__file__).resolve().parent.parent
PATHS = ("tcp", "tls", "ssh", "tunnel")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc/PID/stat: the CPU a process spent, whoever else
    shares the machine (throughput on a shared machine is noisy; CPU per MiB much less so)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


SECTIONS = ("bulk", "concurrent", "hol", "idle")
KiB = 1024

#: Presets: (bulk MiB, rounds, concurrent streams, MiB per concurrent stream, round trips per
#: HOL stream, idle sessions, idle rounds).
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "bulk_mib": 256, "rounds": 5, "streams": 100, "stream_mib": 2.0, "round_trips": 200,
        "sessions": 1000, "idle_rounds": 3,
    },
    "quick": {
        "bulk_mib": 64, "rounds": 3, "streams": 100, "stream_mib": 0.5, "round_trips": 50,
        "sessions": 100, "idle_rounds": 2,
    },
    "tiny": {
        "bulk_mib": 2, "rounds": 1, "streams": 4, "stream_mib": 0.25, "round_trips": 5,
        "sessions": 4, "idle_rounds": 1,
    },
}  # fmt: skip

TARGETS = {
    "bulk_vs_ssh": 1.0,  # tunnel >= 1.0x ssh -L
    "bulk_vs_tls": 0.7,  # tunnel >= 0.7x one direct TLS connection
    "hol_added_p99_ms": 5.0,
    "idle_session_bytes": 64 * KiB,
}


# ---------------------------------------------------------------------- processes


@dataclass
class Child:
    role: str
    proc: asyncio.subprocess.Process
    info: dict[str, Any]

    async def command(self, line: str, within: float = 120) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not reply:
            raise RuntimeError(f"{self.role} exited while running {line!r}")
        result: dict[str, Any] = json.loads(reply)
        return result

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Processes:
    """Every process the benchmark starts, so each is ended by its PID whatever happens."""

    def __init__(
        self, workdir: Path, profile_dir: Path | None, stream_window: int | None = None
    ) -> None:
        self.workdir = workdir
        self.children: list[Child] = []
        self.ssh: list[ForwardingSsh] = []
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        if profile_dir is not None:
            self._env["BENCH_PROFILE_DIR"] = str(profile_dir)
        if stream_window is not None:
            self._env["BENCH_STREAM_WINDOW"] = str(stream_window)

    async def start(self, role: str, *args: str) -> Child:
        log = (self.workdir / f"{role}-{len(self.children)}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks._procs", role, "--certs", str(self.workdir), *args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self._env, cwd=REPO,
        )  # fmt: skip
        child = Child(role, proc, {})
        self.children.append(child)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"{role} failed to start; see {log.name}")
        child.info = json.loads(line)
        return child

    async def stop(self, child: Child) -> None:
        await child.stop()
        self.children.remove(child)

    async def stop_all(self) -> None:
        for child in reversed(self.children):
            await child.stop()
        self.children.clear()
        for forwarding in self.ssh:
            await forwarding.stop()
        self.ssh.clear()


class Control:
    """The hub's plain-HTTP control port."""

    def __init__(self, client: aiohttp.ClientSession, port: int) -> None:
        self._client = client
        self._base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, **query: Any) -> dict[str, Any]:
        params = {k: str(v) for k, v in query.items()}
        async with self._client.get(self._base + path, params=params) as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result

    async def post(self, path: str, body: Any = None, **query: Any) -> dict[str, Any]:
        params = {k: str(v) for k, v in query.items()}
        async with self._client.post(self._base + path, json=body, params=params) as resp:
            resp.raise_for_status()
            result: dict[str, Any] = await resp.json()
            return result


def write_certs(folder: Path) -> ssl.SSLContext:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    return client_ssl


# ---------------------------------------------------------------------- measurements


async def bulk_once(
    port: int, size: int, direction: str, ssl_context: ssl.SSLContext | None
) -> float:
    start, end = await asyncio.wait_for(
        transfer("127.0.0.1", port, size, direction=direction, ssl_context=ssl_context), 120
    )
    return size / (end - start) / 1e6


async def concurrent_once(
    port: int, streams: int, size: int, ssl_context: ssl.SSLContext | None
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    go: asyncio.Future[None] = loop.create_future()
    tasks = [
        asyncio.ensure_future(
            transfer(
                "127.0.0.1", port, size, direction="download", ssl_context=ssl_context, start_at=go
            )
        )
        for _ in range(streams)
    ]
    await asyncio.sleep(0)
    begin = time.perf_counter()
    go.set_result(None)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 300)
    end = max(e for _, e in results)
    per_stream = [size / (e - begin) / 1e6 for _, e in results]
    finish = sorted(e - begin for _, e in results)
    return {
        "aggregate_mbps": streams * size / (end - begin) / 1e6,
        "per_stream_min_mbps": min(per_stream),
        "per_stream_max_mbps": max(per_stream),
        "jain_index": jain(per_stream),
        "min_over_max": min(per_stream) / max(per_stream),
        "first_finish_s": finish[0],
        "last_finish_s": finish[-1],
    }


async def idle_round(
    procs: Processes, client: aiohttp.ClientSession, sessions: int
) -> dict[str, float]:
    """A fresh hub and a fresh swarm: hub RSS and tracemalloc growth per idle session."""
    hub = await procs.start("hub")
    swarm = await procs.start("agent", "--url", hub.info["tunnel_url"])
    control = Control(client, hub.info["control_port"])
    warm = 4
    try:
        await swarm.command(f"connect {warm}")
        await control.get("/wait", sessions=warm)
        await asyncio.sleep(0.2)
        before = await control.get("/memory")
        swarm_before = (await swarm.command("rss"))["rss"]
        swarm_after = (await swarm.command(f"connect {sessions}", within=600))["rss"]
        await control.get("/wait", sessions=warm + sessions, timeout=600)
        await asyncio.sleep(0.5)
        after = await control.get("/memory")
        await swarm.command("close", within=600)
        await control.get("/wait", sessions=0, timeout=120)
        await swarm.command(f"connect {warm}")
        await control.get("/wait", sessions=warm)
        traced_before = (await control.post("/tracemalloc/start"))["traced"]
        await control.post("/tracemalloc/snapshot", base=1)
        await swarm.command(f"connect {sessions}", within=600)
        await control.get("/wait", sessions=warm + sessions, timeout=600)
        await asyncio.sleep(0.5)
        traced_after = (await control.get("/memory"))["traced"]
        snapshot = await control.post("/tracemalloc/snapshot", top=12)
        top, c_buffers = snapshot["top"], snapshot["loop_frame_bytes"]
    finally:
        await procs.stop(swarm)
        await procs.stop(hub)
    return {
        "hub_rss_per_session": (after["rss"] - before["rss"]) / sessions,
        "hub_traced_per_session": (traced_after - traced_before) / sessions,
        "hub_traced_python_per_session": (traced_after - traced_before - c_buffers) / sessions,
        "agent_rss_per_session": (swarm_after - swarm_before) / sessions,
        "top": top,  # type: ignore[dict-item]
    }


# ---------------------------------------------------------------------- the run


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    per_round = [x / y for x, y in zip(a["samples"], b["samples"], strict=True)]
    result = summary(per_round)
    result["of_medians"] = a["median"] / b["median"]
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    profile_dir: Path | None = args.profile
    procs = Processes(workdir, profile_dir, args.stream_window)
    notes: list[str] = []
    bulk_size = int(args.bulk_mib * MiB)
    stream_size = int(args.stream_mib * MiB)
    report: dict[str, Any] = {
        "benchmark": "tunnel",
        "command": "python -m benchmarks.tunnel_bench " + " ".join(sys.argv[1:]),
        "inputs": {
            "mode": args.mode,
            "sections": args.only,
            "rounds": args.rounds,
            "bulk_bytes": bulk_size,
            "concurrent_streams": args.streams,
            "concurrent_bytes_per_stream": stream_size,
            "hol_streams": args.streams,
            "hol_round_trips_per_stream": args.round_trips,
            "hol_message_bytes": args.message_size,
            "idle_sessions": args.sessions,
            "idle_rounds": args.idle_rounds,
            "stream_window": args.stream_window,
            "units": "MB/s = 10^6 bytes per second; ms; bytes",
        },
        "machine": machine_facts(),
        "notes": notes,
    }
    log = print if not args.quiet else (lambda *a, **k: None)
    try:
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(aiohttp.ClientSession())
            client_ssl = write_certs(workdir)
            target = await procs.start("target")
            hub = await procs.start("hub")
            control = Control(client, hub.info["control_port"])
            tcp_target = f"127.0.0.1:{target.info['tcp_port']}"
            agent = await procs.start(
                "agent", "--url", hub.info["tunnel_url"], "--allow", tcp_target
            )
            await agent.command("connect 1")
            await control.get("/wait", sessions=1)
            forward_port = (await control.post("/forward", {"target": tcp_target}))["port"]
            ports: dict[str, tuple[int, ssl.SSLContext | None]] = {
                "tcp": (target.info["tcp_port"], None),
                "tls": (target.info["tls_port"], client_ssl),
                "tunnel": (forward_port, None),
            }
            if args.no_ssh:
                notes.append("ssh -L skipped (--no-ssh)")
            else:
                forwarding = await start_ssh_forward(workdir, target.info["tcp_port"])
                if isinstance(forwarding, str):
                    notes.append(forwarding)
                else:
                    procs.ssh.append(forwarding)
                    ports["ssh"] = (forwarding.local_port, None)
                    report["inputs"]["ssh_cipher"] = forwarding.cipher
            paths = [p for p in PATHS if p in ports]
            report["inputs"]["paths"] = {
                "tcp": "client -> target (plain loopback TCP)",
                "tls": "client -> target over one asyncio TLS connection (same python, uvloop)",
                "ssh": "client -> ssh -L -> sshd -> target",
                "tunnel": "client -> hub serve_forward -> TLS websocket tunnel -> agent Dialer "
                "-> target",
            }
            # Warm-up: one small transfer per path and direction.
            for path in paths:
                for direction in ("download", "upload"):
                    port, context = ports[path]
                    await bulk_once(port, min(bulk_size, 4 * MiB), direction, context)

            # 1. bulk
            if "bulk" in args.only:
                samples: dict[str, dict[str, list[float]]] = {
                    d: {p: [] for p in paths} for d in ("download", "upload")
                }
                cpu: dict[str, list[float]] = {}
                pids = {"hub": hub.proc.pid, "agent": agent.proc.pid}
                for r in range(args.rounds):
                    order = paths[r % len(paths) :] + paths[: r % len(paths)]
                    for direction in ("download", "upload"):
                        for path in order:
                            port, context = ports[path]
                            before = {who: cpu_seconds(pid) for who, pid in pids.items()}
                            mbps = await bulk_once(port, bulk_size, direction, context)
                            samples[direction][path].append(mbps)
                            log(f"  bulk round {r + 1} {direction:8} {path:6} {mbps:9.1f} MB/s")
                            if path == "tunnel":
                                for who, pid in pids.items():
                                    ms = (cpu_seconds(pid) - before[who]) * 1e3
                                    cpu.setdefault(f"{who}_{direction}", []).append(
                                        ms / (bulk_size / MiB)
                                    )
                bulk: dict[str, Any] = {
                    d: {p: summary(v) for p, v in by_path.items()} for d, by_path in samples.items()
                }
                ratios: dict[str, Any] = {}
                for direction, by_path in bulk.items():
                    ratios[direction] = {
                        f"tunnel/{base}": _ratio(by_path["tunnel"], by_path[base])
                        for base in ("ssh", "tls", "tcp")
                        if base in by_path
                    }
                report["bulk_mbps"] = bulk
                report["bulk_ratios"] = ratios
                report["bulk_cpu_ms_per_mib"] = {k: summary(v) for k, v in cpu.items()}

            # 2. concurrent streams
            if "concurrent" in args.only:
                conc: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
                for r in range(args.rounds):
                    for path in paths:
                        port, context = ports[path]
                        result = await concurrent_once(port, args.streams, stream_size, context)
                        conc[path].append(result)
                        log(
                            f"  {args.streams} streams round {r + 1} {path:6} "
                            f"{result['aggregate_mbps']:9.1f} MB/s jain {result['jain_index']:.3f}"
                        )
                report["concurrent"] = {
                    path: {key: summary([x[key] for x in rounds]) for key in rounds[0]}
                    for path, rounds in conc.items()
                }

            # 3. head-of-line isolation
            if "hol" in args.only:
                hol: dict[str, list[dict[str, Any]]] = {"baseline": [], "stalled": []}
                for r in range(args.rounds):
                    kinds = ("baseline", "stalled") if r % 2 == 0 else ("stalled", "baseline")
                    for kind in kinds:
                        result = await control.post(
                            "/hol",
                            {
                                "streams": args.streams,
                                "round_trips": args.round_trips,
                                "size": args.message_size,
                                "stall": kind == "stalled",
                            },
                        )
                        hol[kind].append(result)
                        log(
                            f"  HOL round {r + 1} {kind:8} p50 {result['p50_ms']:.2f} ms "
                            f"p99 {result['p99_ms']:.2f} ms"
                        )
                stalled = hol["stalled"]
                report["hol"] = {
                    "window_bytes": stalled[0]["window"],
                    "high_water_bytes": stalled[0]["high_water"],
                    "baseline_p50_ms": summary([x["p50_ms"] for x in hol["baseline"]]),
                    "baseline_p99_ms": summary([x["p99_ms"] for x in hol["baseline"]]),
                    "stalled_p50_ms": summary([x["p50_ms"] for x in stalled]),
                    "stalled_p99_ms": summary([x["p99_ms"] for x in stalled]),
                    "added_p99_ms": summary(
                        [
                            s["p99_ms"] - b["p99_ms"]
                            for s, b in zip(stalled, hol["baseline"], strict=True)
                        ]
                    ),
                    "stalled_receiver_buffered_bytes": summary(
                        [x["receiver_buffered"] for x in stalled]
                    ),
                    "stalled_sender_queued_bytes": summary([x["sender_queued"] for x in stalled]),
                    "rounds": hol,
                }

            await agent.command("close")
            await procs.stop(agent)
            await procs.stop(hub)
            for forwarding in procs.ssh:
                await forwarding.stop()
            procs.ssh.clear()

            # 4. idle sessions
            if "idle" in args.only:
                idle: list[dict[str, Any]] = []
                for r in range(args.idle_rounds):
                    result = await idle_round(procs, client, args.sessions)
                    idle.append(result)
                    log(
                        f"  idle round {r + 1}: hub RSS "
                        f"{result['hub_rss_per_session'] / KiB:.1f} KiB/session, traced "
                        f"{result['hub_traced_per_session'] / KiB:.1f} KiB/session"
                    )
                report["idle"] = {
                    "sessions": args.sessions,
                    "hub_rss_per_session_bytes": summary([x["hub_rss_per_session"] for x in idle]),
                    "hub_tracemalloc_per_session_bytes": summary(
                        [x["hub_traced_per_session"] for x in idle]
                    ),
                    "agent_rss_per_session_bytes": summary(
                        [x["agent_rss_per_session"] for x in idle]
                    ),
                    "hub_tracemalloc_python_per_session_bytes": summary(
                        [x["hub_traced_python_per_session"] for x in idle]
                    ),
                    "hub_tracemalloc_top": idle[0]["top"],
                }

    finally:
        await procs.stop_all()
        if profile_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report["targets"] = evaluate(report)
    return report


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """PASS/MISS for each target of issue 2 (SKIP where it was not measured)."""
    targets: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, ok: Callable[[float], bool]) -> None:
        targets.append(
            {
                "target": name,
                "value": value,
                "limit": limit,
                "result": "SKIP" if value is None else ("PASS" if ok(value) else "MISS"),
            }
        )

    for direction, ratios in report.get("bulk_ratios", {}).items():
        for base, label, key in (
            ("ssh", "1.0x ssh -L", "bulk_vs_ssh"),
            ("tls", "0.7x direct TLS", "bulk_vs_tls"),
        ):
            ratio = ratios.get(f"tunnel/{base}")
            add(
                f"bulk {direction} >= {label}",
                ratio["of_medians"] if ratio else None,
                TARGETS[key],
                lambda v, key=key: v >= TARGETS[key],
            )
    if "hol" in report:
        hol = report["hol"]
        add(
            "stalled stream buffers <= its window (receiver)",
            hol["stalled_receiver_buffered_bytes"]["max"],
            hol["window_bytes"],
            lambda v: v <= hol["window_bytes"],
        )
        add(
            "stalled stream adds <= 5 ms to others' p99",
            hol["added_p99_ms"]["median"],
            TARGETS["hol_added_p99_ms"],
            lambda v: v <= TARGETS["hol_added_p99_ms"],
        )
    if "idle" in report:
        add(
            "idle session <= 64 KiB (hub RSS)",
            report["idle"]["hub_rss_per_session_bytes"]["median"],
            TARGETS["idle_session_bytes"],
            lambda v: v <= TARGETS["idle_session_bytes"],
        )
    return targets


# ---------------------------------------------------------------------- output


def _fmt(stat: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "-"
    med, lo, hi = stat["median"] / scale, stat["min"] / scale, stat["max"] / scale
    if stat["n"] == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


def _fmt_ratio(ratio: dict[str, Any] | None) -> str:
    """Ratio of the medians, with the range of the per-round ratios."""
    if not ratio:
        return "-"
    if ratio["n"] == 1:
        return f"{ratio['of_medians']:.2f}"
    return f"{ratio['of_medians']:.2f} [{ratio['min']:.2f}-{ratio['max']:.2f}]"


def table(report: dict[str, Any]) -> str:
    """The report as Markdown tables (median [min-max] over rounds; a ratio column is the
    ratio of the medians [min-max of the per-round ratios])."""
    inputs = report["inputs"]
    machine = report["machine"]
    lines = [
        f"Tunnel benchmark ({inputs['mode']}, {inputs['rounds']} rounds; median [min-max]); "
        f"{machine['cpu_count']} x {machine['cpu_model']}, Python {machine['python']}, "
        f"{machine['date']}",
    ]
    if "bulk_mbps" in report or "concurrent" in report:
        lines += [
            "",
            "| figure | tcp | tls | ssh -L | tunnel | tunnel/ssh | tunnel/tls | tunnel/tcp |",
            "|---|---|---|---|---|---|---|---|",
        ]
    mib = inputs["bulk_bytes"] / MiB
    for direction, by_path in report.get("bulk_mbps", {}).items():
        ratios = report["bulk_ratios"][direction]
        cells = [_fmt(by_path.get(p, {})) for p in PATHS]
        rcells = [_fmt_ratio(ratios.get(f"tunnel/{b}")) for b in ("ssh", "tls", "tcp")]
        lines.append(f"| bulk {direction} {mib:g} MiB, MB/s | " + " | ".join(cells + rcells) + " |")
    for key, stat in report.get("bulk_cpu_ms_per_mib", {}).items():
        who, direction = key.split("_", 1)
        cells = ["", "", "", _fmt(stat, digits=2), "", "", ""]
        lines.append(f"| bulk {direction}: {who} CPU ms per MiB | " + " | ".join(cells) + " |")
    if "concurrent" in report:
        conc = report["concurrent"]
        n = inputs["concurrent_streams"]
        each = inputs["concurrent_bytes_per_stream"] / MiB

        def conc_row(label: str, key: str, digits: int = 1) -> None:
            cells = [_fmt(conc[p][key], digits=digits) if p in conc else "-" for p in PATHS]
            ratio = [
                f"{conc['tunnel'][key]['median'] / conc[b][key]['median']:.2f}"
                if b in conc and conc[b][key]["median"]
                else "-"
                for b in ("ssh", "tls", "tcp")
            ]
            lines.append(f"| {label} | " + " | ".join(cells + ratio) + " |")

        conc_row(f"{n} streams x {each:g} MiB down: aggregate, MB/s", "aggregate_mbps")
        conc_row(f"{n} streams: Jain fairness (1 = fair)", "jain_index", 3)
        conc_row(f"{n} streams: slowest/fastest", "min_over_max", 2)
    if "hol" in report:
        hol = report["hol"]
        lines += [
            "",
            f"| head-of-line isolation (in the hub: {inputs['hol_streams']} echo streams x "
            f"{inputs['hol_round_trips_per_stream']} round trips of "
            f"{inputs['hol_message_bytes']} B) | value |",
            "|---|---|",
            f"| p50 without / with a stalled stream, ms | "
            f"{_fmt(hol['baseline_p50_ms'], digits=2)} / {_fmt(hol['stalled_p50_ms'], digits=2)} |",
            f"| p99 without / with a stalled stream, ms | "
            f"{_fmt(hol['baseline_p99_ms'], digits=2)} / {_fmt(hol['stalled_p99_ms'], digits=2)} |",
            f"| added p99, ms | {_fmt(hol['added_p99_ms'], digits=2)} |",
            f"| stalled stream: unread bytes at the receiver (TunnelStream.buffered), KiB | "
            f"{_fmt(hol['stalled_receiver_buffered_bytes'], KiB)} "
            f"(window {hol['window_bytes'] / KiB:g}) |",
            f"| stalled stream: bytes queued at the sender, KiB | "
            f"{_fmt(hol['stalled_sender_queued_bytes'], KiB)} "
            f"(high-water mark {hol['high_water_bytes'] / KiB:g} + one 64 KiB write) |",
        ]
    if "idle" in report:
        idle = report["idle"]
        lines += [
            "",
            f"| idle sessions ({idle['sessions']} to one hub process) | KiB per session |",
            "|---|---|",
            f"| hub RSS delta / N | {_fmt(idle['hub_rss_per_session_bytes'], KiB)} |",
            f"| hub tracemalloc delta / N, all | "
            f"{_fmt(idle['hub_tracemalloc_per_session_bytes'], KiB)} |",
            f"| hub tracemalloc delta / N, Python objects only (without uvloop's C buffers) | "
            f"{_fmt(idle['hub_tracemalloc_python_per_session_bytes'], KiB)} |",
            f"| agent (swarm) RSS delta / N | {_fmt(idle['agent_rss_per_session_bytes'], KiB)} |",
        ]
    lines += ["", "| target | value | limit | result |", "|---|---|---|---|"]
    for target in report["targets"]:
        value = target["value"]
        limit = target["limit"]
        if "KiB" in target["target"] or "window" in target["target"]:
            shown = "-" if value is None else f"{value / KiB:.1f} KiB"
            shown_limit = f"{limit / KiB:g} KiB"
        elif "ms" in target["target"]:
            shown = "-" if value is None else f"{value:+.2f} ms"
            shown_limit = f"{limit:g} ms"
        else:
            shown = "-" if value is None else f"{value:.2f}x"
            shown_limit = f"{limit:g}x"
        lines.append(f"| {target['target']} | {shown} | {shown_limit} | {target['result']} |")
    for note in report["notes"]:
        lines.append(f"\nNote: {note}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tunnel_bench", description=__doc__.split("\n\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument(
        "--tiny", action="store_const", dest="mode", const="tiny", help="smoke-test size"
    )
    parser.set_defaults(mode="full")
    parser.add_argument("--rounds", type=int, help="repetitions of each figure")
    parser.add_argument("--bulk-mib", type=float, help="MiB per bulk transfer")
    parser.add_argument("--streams", type=int, help="concurrent streams (and HOL echo streams)")
    parser.add_argument("--stream-mib", type=float, help="MiB per concurrent stream")
    parser.add_argument("--round-trips", type=int, help="round trips per HOL stream")
    parser.add_argument("--message-size", type=int, default=64, help="HOL message bytes")
    parser.add_argument("--sessions", type=int, help="idle sessions")
    parser.add_argument("--idle-rounds", type=int, help="rounds of the idle-session figure")
    parser.add_argument("--no-ssh", action="store_true", help="skip the ssh -L baseline")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--profile", help="folder for cProfile dumps of every process")
    parser.add_argument(
        "--stream-window",
        type=int,
        help="experiment: initial stream window in bytes for hub and agent (default: the "
        "protocol default)",
    )
    parser.add_argument("--out", default="benchmarks/results/tunnel.json", help="JSON report")
    parser.add_argument("--quiet", action="store_true", help="print only the table")
    args = parser.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x]
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    if args.profile:
        args.profile = Path(args.profile).resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    for key, value in PRESETS[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = uvloop.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    text = table(report)
    report_md = out.with_suffix(".md")
    report_md.write_text(text + f"\n\nCommand: `{report['command']}`\n")
    print(text)
    print(f"\nJSON: {out}  table: {report_md}")


if __name__ == "__main__":
    main()
