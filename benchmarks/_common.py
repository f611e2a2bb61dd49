"""Helpers shared by the benchmark driver and its child processes.

* the *bench wire protocol* spoken by the target server and the load clients: a 9-byte request
  header (one op byte and an 8-byte big-endian size), then
  ``D n``  the server sends n bytes and closes,
  ``U n``  the client sends n bytes, the server answers ``K`` once it has them all,
  ``E 0``  the server echoes everything back;
* the asyncio protocols for both ends (plain callbacks, no stream buffers, so the load
  generator costs as little CPU as possible and the path under test is the bottleneck);
* statistics and machine facts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

MiB = 1024 * 1024
CHUNK = 256 * 1024
_BLOB = bytes(range(256)) * (CHUNK // 256)
HEADER = 9


def request(op: bytes, size: int = 0) -> bytes:
    return op + size.to_bytes(8, "big")


def rss_bytes() -> int:
    """This process's resident set size, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------- the target server


class _Sender:
    """Writes ``remaining`` bytes to a transport, pausing when the transport says so."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.remaining = 0
        self.paused = False
        self.close_when_done = False
        self.sent_done: asyncio.Future[None] | None = None

    def pump(self) -> None:
        transport = self.transport
        assert transport is not None
        while self.remaining > 0 and not self.paused:
            n = min(self.remaining, CHUNK)
            transport.write(_BLOB if n == CHUNK else _BLOB[:n])
            self.remaining -= n
        if self.remaining == 0:
            if self.close_when_done:
                self.close_when_done = False
                transport.close()
            if self.sent_done is not None and not self.sent_done.done():
                self.sent_done.set_result(None)


class BenchServer(asyncio.Protocol):
    """The far end of every path: sink, source or echo, chosen by the request header."""

    def __init__(self) -> None:
        self._header = b""
        self._op = b""
        self._remaining = 0
        self._sender = _Sender()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._sender.transport = self._transport

    def pause_writing(self) -> None:
        self._sender.paused = True

    def resume_writing(self) -> None:
        self._sender.paused = False
        self._sender.pump()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        if not self._op:
            self._header += data
            if len(self._header) < HEADER:
                return
            self._op = self._header[:1]
            size = int.from_bytes(self._header[1:HEADER], "big")
            data = self._header[HEADER:]
            self._header = b""
            if self._op == b"D":
                self._sender.remaining = size
                self._sender.close_when_done = True
                self._sender.pump()
                return
            if self._op == b"U":
                self._remaining = size
                if size == 0:
                    transport.write(b"K")
            if not data:
                return
        if self._op == b"U":
            self._remaining -= len(data)
            if self._remaining == 0:
                transport.write(b"K")
        elif self._op == b"E":
            transport.write(data)

    def eof_received(self) -> bool:
        return False


# ---------------------------------------------------------------------- load clients


class _Download(asyncio.Protocol):
    def __init__(self, size: int, done: asyncio.Future[float]) -> None:
        self.size = size
        self.got = 0
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(request(b"D", self.size))

    def data_received(self, data: bytes) -> None:
        self.got += len(data)
        if self.got >= self.size and not self.done.done():
            self.done.set_result(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(
                ConnectionError(f"closed after {self.got} of {self.size} bytes: {exc!r}")
            )


class _Upload(asyncio.Protocol):
    def __init__(self, size: int, done: asyncio.Future[float]) -> None:
        self.sender = _Sender()
        self.sender.remaining = size
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sender.transport = cast(asyncio.Transport, transport)
        self.sender.transport.write(request(b"U", self.sender.remaining))
        self.sender.pump()

    def pause_writing(self) -> None:
        self.sender.paused = True

    def resume_writing(self) -> None:
        self.sender.paused = False
        self.sender.pump()

    def data_received(self, data: bytes) -> None:
        if b"K" in data and not self.done.done():
            self.done.set_result(time.perf_counter())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed before the ack: {exc!r}"))


async def transfer(
    host: str,
    port: int,
    size: int,
    *,
    direction: str,
    ssl_context: ssl.SSLContext | None = None,
    start_at: asyncio.Future[None] | None = None,
) -> tuple[float, float]:
    """Move ``size`` bytes over one fresh connection; returns (start, end) perf_counter times.

    The clock starts just before the connection is made, so connection setup (a TCP and, where
    there is one, a TLS handshake or a tunnel stream open) is included, as a user would see it.
    """
    loop = asyncio.get_running_loop()
    if start_at is not None:
        await start_at
    done: asyncio.Future[float] = loop.create_future()
    proto: asyncio.Protocol = (
        _Download(size, done) if direction == "download" else _Upload(size, done)
    )
    start = time.perf_counter()
    transport, _ = await loop.create_connection(
        lambda: proto,
        host,
        port,
        ssl=ssl_context,
        server_hostname="127.0.0.1" if ssl_context else None,
    )
    try:
        end = await done
    finally:
        transport.close()
    return start, end


async def wait_listening(host: str, port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


# ---------------------------------------------------------------------- statistics


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements."""
    values = sorted(samples)
    if not values:
        return {"n": 0}
    if len(values) > 1:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": q1,
        "q3": q3,
        "n": len(values),
        "samples": list(samples),
    }


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when every stream got the same, 1/n when one got it all."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


# ---------------------------------------------------------------------- machine facts


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - a missing package is a fact to report, not an error
        return None


@dataclasses.dataclass(frozen=True)
class _Probe:
    number: int
    text: str


def _calibration_work() -> int:
    seen: dict[str, int] = {}
    for i in range(2000):
        probe = _Probe(i, str(i))
        seen[probe.text] = probe.number * 2
        f"X-Remote-{i}".lower().startswith("x-")
    return len(seen)


def interpreter_calibration_ms() -> float:
    """Milliseconds for a fixed piece of pure-Python work (object creation, dict and string
    operations; best of 30): how fast this interpreter build is. Builds of one Python version
    differ a lot: on the reference machine, a PGO+LTO build (the product image's
    ``python:3.11-slim``, Debian's ``python3.11``) runs it in about 1.05 ms, a plain
    ``./configure --enable-shared`` build (pyenv's default) in about 1.7 ms. Everything the
    benchmark measures in Python code scales with it."""
    best = float("inf")
    for _ in range(30):
        start = time.perf_counter()
        _calibration_work()
        best = min(best, time.perf_counter() - start)
    return round(best * 1e3, 3)


def machine_facts() -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ssh_version = None
    if shutil.which("ssh"):
        proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
        ssh_version = (proc.stderr or proc.stdout).strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        # The interpreter behind the virtualenv, and how fast its build runs Python code.
        "python_executable": os.path.realpath(sys.executable),
        "python_calibration_ms": interpreter_calibration_ms(),
        "uvloop": _version("uvloop"),
        "aiohttp": _version("aiohttp"),
        "msgpack": _version("msgpack"),
        "openssl": ssl.OPENSSL_VERSION,
        "openssh": ssh_version,
    }


async def commands(reader: asyncio.StreamReader, stop: asyncio.Event) -> AsyncIterator[list[str]]:
    """The driver's commands to a helper process, a line of words at a time, until ``quit``,
    an empty line, end of input or ``stop``."""
    while not stop.is_set():
        line_task = asyncio.ensure_future(reader.readline())
        stop_task = asyncio.ensure_future(stop.wait())
        await asyncio.wait((line_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not line_task.done():
            line_task.cancel()
            return
        words = line_task.result().decode().split()
        if not words or words[0] == "quit":
            return
        yield words
