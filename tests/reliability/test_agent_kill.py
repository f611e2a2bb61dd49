"""SIGKILL an agent in the middle of an exec, a watch, a ``logs -f`` and a large download.

The client (real kubectl, or aiohttp for the download) must get a clean error at once (well
under 3 s, a non-zero exit or a payload error, never a hang or a silently truncated success);
a replacement agent process reconnects, and new requests through it work.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.e2e import fleet
from tests.reliability import harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTER = "kill-0001"
#: The client must notice a dead agent within this many seconds.
PROMPT = 3.0


async def _kubectl_until(
    world: harness.World, marker: bytes, *args: str
) -> tuple[asyncio.subprocess.Process, bytearray]:
    """Start kubectl and return once ``marker`` is in its stdout (the stream is flowing)."""
    process = await asyncio.create_subprocess_exec(
        harness.KUBECTL, "--kubeconfig", str(world.kubeconfig(CLUSTER)), *args,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen = bytearray()
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            while marker not in seen:
                chunk = await process.stdout.read(4096)
                assert chunk, f"kubectl ended early: {seen!r} {(await _stderr(process))!r}"
                seen += chunk
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, seen


async def _stderr(process: asyncio.subprocess.Process) -> bytes:
    assert process.stderr is not None
    return await process.stderr.read()


async def _after_kill(process: asyncio.subprocess.Process) -> tuple[int, float, bytes]:
    """Drain kubectl until it exits; (exit code, seconds, stderr). Kills it after 15 s."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert process.stdout is not None
    try:
        async with asyncio.timeout(15):
            while await process.stdout.read(65536):
                pass
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("kubectl hung after the agent died") from None
    return code, loop.time() - start, await _stderr(process)


async def _replacement_works(world: harness.World) -> float:
    """A new agent process for the cluster; returns seconds until kubectl works through it."""
    await world.start_agents([CLUSTER])
    loop = asyncio.get_running_loop()
    start = loop.time()
    await world.wait_connected(CLUSTER)
    result = await fleet.run(
        harness.KUBECTL, "--kubeconfig", str(world.kubeconfig(CLUSTER)), "get", "pods", "-o=name"
    )
    assert result.returncode == 0, result.stderr
    assert b"pod/demo" in result.stdout
    return loop.time() - start


@pytest.mark.parametrize(
    ("what", "argv", "marker"),
    [
        ("exec", ["exec", "demo", "--", "sh", "-c", "echo started; sleep 60"], b"started"),
        ("watch", ["get", "pods", "--watch", "-o=name"], b"pod/demo"),
        ("logs -f", ["logs", "-f", "demo"], b"tick"),
    ],
)
async def test_kubectl_gets_an_error_at_once_when_the_agent_dies(
    tmp_path: Path, what: str, argv: list[str], marker: bytes
) -> None:
    async with harness.running_world(tmp_path, child=True) as world:
        agents = await world.start_agents([CLUSTER])
        await world.wait_connected(CLUSTER)
        process, _ = await _kubectl_until(world, marker, *argv)
        try:
            agents.proc.kill()  # SIGKILL by PID: no GOAWAY, no FIN from the tunnel's side
            code, seconds, stderr = await _after_kill(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        harness.report(
            what, exit_code=code, error_after_s=round(seconds, 3), stderr=stderr[-200:].decode()
        )
        assert code != 0, f"{what}: kubectl exited 0 after its agent died: {stderr!r}"
        assert seconds < PROMPT, f"{what}: kubectl took {seconds:.2f}s to notice"
        assert await world.hub.open_streams_gauge() == 0  # type: ignore[union-attr]
        harness.report(what, replacement_serves_after_s=round(await _replacement_works(world), 3))


async def test_download_fails_with_a_payload_error_at_once_when_the_agent_dies(
    tmp_path: Path,
) -> None:
    async with harness.running_world(tmp_path, backend=True) as world:
        agents = await world.start_agents([CLUSTER])
        await world.wait_connected(CLUSTER)
        url = world.backend_url(CLUSTER, "blob?size=1073741824&chunk=65536&delay=0.002")
        loop = asyncio.get_running_loop()
        got = 0
        async with world.http.get(url, headers=world.auth(harness.ADMIN_TOKEN)) as response:
            assert response.status == 200
            assert response.content_length == 1073741824
            while got < 1 << 20:
                got += len(await response.content.read(65536))
            agents.proc.kill()
            killed = loop.time()
            error: Exception | None = None
            try:
                async with asyncio.timeout(15):
                    while chunk := await response.content.read(65536):
                        got += len(chunk)
            except (aiohttp.ClientPayloadError, TimeoutError) as exc:
                error = exc
            seconds = loop.time() - killed
        harness.report("download", error_after_s=round(seconds, 3), received=got, error=repr(error))
        assert isinstance(error, aiohttp.ClientPayloadError), error
        assert seconds < PROMPT
        assert got < 1073741824
        assert world.hub is not None
        assert await world.hub.open_streams_gauge() == 0
        await world.start_agents([CLUSTER])
        waited = await world.wait_connected(CLUSTER)
        async with world.http.get(
            world.backend_url(CLUSTER, "blob?size=5000000"),
            headers=world.auth(harness.ADMIN_TOKEN),
        ) as response:
            assert response.status == 200
            assert len(await response.read()) == 5000000
        harness.report("download", replacement_serves_after_s=round(waited, 3))
