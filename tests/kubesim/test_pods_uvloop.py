"""Pod processes under uvloop, which the standalone kubesim runs on: uvloop runs a subprocess's
preexec_fn before moving the stdio descriptors into place, unlike CPython's subprocess."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvloop

from clusternet_aa.sandbox.kubesim.pods.process import STDOUT, LocalProcess


def test_a_tty_process_gets_its_pty_as_controlling_terminal_under_uvloop(tmp_path: Path) -> None:
    output = bytearray()

    async def sink(stream: int, chunk: bytes) -> None:
        assert stream == STDOUT
        output.extend(chunk)

    async def main() -> int:
        process = await LocalProcess.start(
            ["sh", "-c", "tty; stty size; echo done"],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            stdin=True,
            tty=True,
        )
        process.resize(100, 30)
        return await asyncio.wait_for(process.run(sink), 10)

    assert uvloop.run(main()) == 0
    text = output.decode(errors="replace")
    assert "/dev/pts/" in text
    assert "not a tty" not in text
    assert "done" in text
