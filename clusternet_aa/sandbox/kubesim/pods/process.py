"""Local processes standing in for container processes: pipes or a pseudo-terminal.

Both a container's main process and every exec run through :class:`LocalProcess`. Output is
pumped to a callback chunk by chunk (the callback's await is the back-pressure), stdin can be
written and closed, a tty gets a real pty whose window size follows resize requests, and each
process leads its own session so that killing it also kills whatever it started (a
``sh -c 'sleep 100 &'`` must not outlive its pod).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import os
import pty
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

STDOUT = 1
STDERR = 2
_READ_SIZE = 32 * 1024
#: After the process exits, output still arriving keeps the pumps going; this much silence ends
#: them.
_DRAIN_IDLE = 0.5

#: Receives (stream number, bytes) for every chunk of output.
OutputSink = Callable[[int, bytes], Awaitable[None]]


class StartError(Exception):
    """The command could not be started; ``detail`` is runc's wording of why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _start_error(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> StartError | None:
    """What runc says when ``argv[0]`` cannot be executed, before trying (None: looks fine)."""
    command = argv[0] if argv else ""
    if not command:
        return StartError('exec: "": executable file not found in $PATH')
    if "/" in command:
        path = Path(command) if os.path.isabs(command) else cwd / command
        if not path.exists():
            return StartError(f'exec: "{command}": stat {command}: no such file or directory')
        if path.is_dir() or not os.access(path, os.X_OK):
            return StartError(f'exec: "{command}": permission denied')
        return None
    if shutil.which(command, path=env.get("PATH", "")) is None:
        return StartError(f'exec: "{command}": executable file not found in $PATH')
    return None


async def _fd_ready(fd: int, *, write: bool) -> None:
    """Wait until a non-blocking descriptor can be read (or written)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


def _make_controlling_tty(tty_path: str) -> None:  # runs in the child between fork and exec
    """A new session whose controlling terminal is the pod's pty.

    This does not assume the child's fd 0 is already the pty: uvloop runs ``preexec_fn`` before
    it moves the stdio descriptors into place (CPython's subprocess runs it after), so the
    terminal is opened by path here.
    """
    os.setsid()
    fd = os.open(tty_path, os.O_RDWR)
    try:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
    finally:
        os.close(fd)


class LocalProcess:
    """One running process with its stdio, started by :meth:`start`."""

    def __init__(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        self.process = process
        self.master = master
        self.tty = master is not None
        self._progress = 0
        self._stdin_closed = False

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        stdin: bool,
        tty: bool,
    ) -> LocalProcess:
        """Spawn ``argv``; raises :class:`StartError` as runc would refuse it."""
        problem = _start_error(argv, env, cwd)
        if problem is not None:
            raise problem
        try:
            if tty:
                master, slave = pty.openpty()
                try:
                    process = await asyncio.create_subprocess_exec(
                        *argv,
                        stdin=slave,
                        stdout=slave,
                        stderr=slave,
                        cwd=cwd,
                        env=dict(env),
                        preexec_fn=functools.partial(_make_controlling_tty, os.ttyname(slave)),
                    )
                except BaseException:
                    os.close(master)
                    raise
                finally:
                    os.close(slave)
                os.set_blocking(master, False)
                return cls(process, master)
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
            )
        except PermissionError:
            raise StartError(f'exec: "{argv[0]}": permission denied') from None
        except FileNotFoundError:
            raise StartError(f'exec: "{argv[0]}": executable file not found in $PATH') from None
        except (OSError, subprocess.SubprocessError) as e:
            # Any other failure to start must reach the client as a Status, not escape the
            # upgraded connection's handler (aiohttp would write an HTTP 500 into the stream).
            raise StartError(f'exec: "{argv[0]}": {e}') from None
        return cls(process, None)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    # -- output --------------------------------------------------------------------------

    async def _pump_pipe(
        self, reader: asyncio.StreamReader | None, stream: int, sink: OutputSink
    ) -> None:
        if reader is None:
            return
        while chunk := await reader.read(_READ_SIZE):
            self._progress += 1
            await sink(stream, chunk)

    async def _pump_pty(self, sink: OutputSink) -> None:
        assert self.master is not None
        fd = self.master
        while True:
            try:
                chunk = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                await _fd_ready(fd, write=False)
                continue
            except OSError as e:
                if e.errno == errno.EIO:  # every slave end is closed
                    return
                raise
            if not chunk:
                return
            self._progress += 1
            await sink(STDOUT, chunk)

    async def run(self, sink: OutputSink) -> int:
        """Pump all output into ``sink`` until the process exits; returns its exit code.

        Output written just before the exit is still delivered; a background child that keeps
        the pipes open does not hold the caller once output has gone quiet.
        """
        if self.master is not None:
            pumps = [asyncio.ensure_future(self._pump_pty(sink))]
        else:
            pumps = [
                asyncio.ensure_future(self._pump_pipe(self.process.stdout, STDOUT, sink)),
                asyncio.ensure_future(self._pump_pipe(self.process.stderr, STDERR, sink)),
            ]
        try:
            code = await self.process.wait()
            while True:
                seen = self._progress
                _, pending = await asyncio.wait(pumps, timeout=_DRAIN_IDLE)
                if not pending or self._progress == seen:
                    break
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            self._close_master()
        return code

    # -- input ---------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        if self._stdin_closed or not data:
            return
        if self.master is not None:
            await self._write_pty(data)
            return
        stdin = self.process.stdin
        if stdin is None:
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._stdin_closed = True

    async def _write_pty(self, data: bytes) -> None:
        assert self.master is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                await _fd_ready(self.master, write=True)
                continue
            except OSError:
                return
            view = view[written:]

    async def close_stdin(self) -> None:
        """End of input: EOF on a pipe; on a terminal, the EOF character (as Ctrl-D)."""
        if self._stdin_closed:
            return
        if self.master is not None:
            await self._write_pty(b"\x04")
            return
        self._stdin_closed = True
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self.master is None:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    # -- ending --------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the process and everything in its session."""
        if self.process.returncode is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)  # leftovers of an exited leader
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _close_master(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None
