"""The sandbox's processes: start each with its own log file, record it in ``<state>/pids.json``,
and stop it by PID (SIGTERM, a grace period, then SIGKILL).

A record carries the process's start time as the kernel counts it (``/proc/<pid>/stat``), so a
PID the system has since given to another program is never signalled. ``pids.json`` is rewritten
atomically after every change, so ``clusternet-sandbox --down`` from another terminal (or after
the sandbox itself was killed) finds every process that may still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PIDS_FILE = "pids.json"
#: Seconds a process gets between SIGTERM and SIGKILL.
DEFAULT_GRACE = 10.0


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields and fields[0] == "Z":  # a zombie has exited; only its exit status is left
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessRecord:
    """One process the sandbox started."""

    name: str
    pid: int
    #: ``start_ticks(pid)`` when it started: tells a reused PID apart.
    ticks: int | None
    log: str = ""
    #: TCP ports on 127.0.0.1 it listens on (for the record, and to check they are freed).
    ports: tuple[int, ...] = ()
    argv: tuple[str, ...] = ()

    def alive(self) -> bool:
        ticks = start_ticks(self.pid)
        if ticks is None:
            return False
        return self.ticks is None or ticks == self.ticks

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            ticks=None if data.get("ticks") is None else int(data["ticks"]),
            log=str(data.get("log", "")),
            ports=tuple(int(p) for p in data.get("ports", ())),
            argv=tuple(str(a) for a in data.get("argv", ())),
        )


@dataclass
class PidFile:
    """``<state>/pids.json``: the supervisor (the foreground ``clusternet-sandbox``) and its
    processes in start order."""

    path: Path
    supervisor: ProcessRecord | None = None
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path) -> PidFile:
        path = state_dir / PIDS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise SandboxProcessError(f"{path}: unreadable ({exc})") from exc
        supervisor = data.get("supervisor")
        return cls(
            path,
            supervisor=ProcessRecord.from_json(supervisor) if supervisor else None,
            processes=[ProcessRecord.from_json(p) for p in data.get("processes", ())],
        )

    def save(self) -> None:
        document = {
            "supervisor": asdict(self.supervisor) if self.supervisor else None,
            "processes": [asdict(p) for p in self.processes],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def alive(self) -> list[ProcessRecord]:
        everyone = ([self.supervisor] if self.supervisor else []) + self.processes
        return [p for p in everyone if p.alive()]


class SandboxProcessError(Exception):
    """A process could not be started, or the PID file is unusable."""


@dataclass
class Started:
    """A process started by this supervisor."""

    record: ProcessRecord
    process: asyncio.subprocess.Process


async def start(
    pids: PidFile,
    name: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    ports: Iterable[int] = (),
) -> Started:
    """Start ``argv`` in its own session (Ctrl-C reaches only the supervisor, which stops the
    processes in order), its output appended to ``log``, and record it in ``pids``."""
    with log.open("ab") as out:
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxProcessError(f"cannot start {name} ({argv[0]}): {exc}") from exc
    record = ProcessRecord(
        name=name,
        pid=process.pid,
        ticks=start_ticks(process.pid),
        log=str(log),
        ports=tuple(ports),
        argv=tuple(argv),
    )
    pids.processes.append(record)
    pids.save()
    return Started(record, process)


async def wait_gone(records: Iterable[ProcessRecord], within: float) -> list[ProcessRecord]:
    """Wait until none of ``records`` is alive or ``within`` seconds pass; the survivors."""
    pending = [r for r in records if r.alive()]
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        pending = [r for r in pending if r.alive()]
    return pending


def _signal(record: ProcessRecord, signum: int) -> None:
    if record.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signum)


async def terminate(records: Sequence[ProcessRecord], grace: float = DEFAULT_GRACE) -> list[str]:
    """SIGTERM ``records`` together, SIGKILL those still alive after ``grace``; the names of the
    processes that had to be killed."""
    for record in records:
        _signal(record, signal.SIGTERM)
    survivors = await wait_gone(records, grace)
    for record in survivors:
        _signal(record, signal.SIGKILL)
    await wait_gone(survivors, 5.0)
    return [r.name for r in survivors]


def processes_under(directory: Path) -> list[ProcessRecord]:
    """Processes whose working directory is ``directory`` or below it: the pods kubesim ran
    (each in its own session, so they outlive a kubesim that was SIGKILLed)."""
    root = directory.resolve()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            pid = int(entry.name)
            found.append(ProcessRecord(name=f"pod process {pid}", pid=pid, ticks=start_ticks(pid)))
    return found
