"""Real kubectl against pods that run: exec, -it, cp, port-forward, logs, and the SPDY fallback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from clusternet_aa.sandbox.kubesim.pods import PORTS_ANNOTATION
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.kubesim.conftest import Kubectl
from tests.kubesim.podtools import free_port, pod, pod_sim

SLEEPER = {"name": "c", "image": "busybox", "command": ["sleep", "300"]}


def _clean(stderr: str) -> None:
    """No websocket trouble (bad close codes, broken error stream) may surface."""
    assert "websocket" not in stderr.lower(), stderr
    assert "error stream" not in stderr, stderr


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[KubesimServer]:
    async with pod_sim(tmp_path, ports={8081: free_port()}) as sim:
        yield sim


@pytest.fixture
def kube(server: KubesimServer, kubectl_binary: Path, tmp_path: Path) -> Kubectl:
    assert server.config.state_dir is not None
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(kubectl_binary, server.config.state_dir / "admin.kubeconfig", home)


async def _pod(kube: Kubectl, server: KubesimServer, obj: dict[str, object]) -> None:
    await kube.run("apply", "-f", "-", stdin=json.dumps(obj))
    await server.settle()
    await server.pods.settle()


async def test_exec(kube: Kubectl, server: KubesimServer) -> None:
    await _pod(kube, server, pod("p", SLEEPER))
    failed = await kube.run(
        "exec", "p", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert failed.returncode == 3
    assert failed.stdout == "out\n"
    assert failed.stderr == "err\ncommand terminated with exit code 3\n"
    data = "0123456789abcde\n" * 65536  # 1 MiB
    counted = await kube.run("exec", "-i", "p", "--", "wc", "-c", stdin=data)
    assert counted.stdout.strip() == str(len(data))
    _clean(counted.stderr)
    missing = await kube.run("exec", "p", "--", "no-such-command", check=False)
    assert missing.returncode == 1
    assert re.fullmatch(
        r"error: Internal error occurred: Internal error occurred: error executing command in "
        r'container: failed to exec in container: failed to start exec "[0-9a-f]{64}": OCI '
        r"runtime exec failed: exec failed: unable to start container process: exec: "
        r'"no-such-command": executable file not found in \$PATH: unknown\n',
        missing.stderr,
    )


async def test_exec_with_a_terminal(kube: Kubectl, server: KubesimServer) -> None:
    await _pod(kube, server, pod("p", SLEEPER))
    inner = shlex.join(
        [str(kube.binary), "exec", "-it", "p", "--", "sh", "-c", "tty; test -t 0 && echo term"]
    )
    process = await asyncio.create_subprocess_exec(
        "script",
        "-qec",
        inner,
        "/dev/null",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=kube.env(),
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    text = out.decode()
    assert process.returncode == 0, (text, err)
    assert re.search(r"/dev/pts/\d+\r?\n", text), text
    assert "term" in text
    _clean(text + err.decode())


async def test_cp_50_mb_both_ways(kube: Kubectl, server: KubesimServer, tmp_path: Path) -> None:
    await _pod(kube, server, pod("p", SLEEPER))
    original = tmp_path / "big.bin"
    original.write_bytes(os.urandom(1 << 20) * 50)
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    os.chdir(tmp_path)
    put = await kube.run("cp", "big.bin", "default/p:big.bin", timeout=60)
    _clean(put.stderr)
    in_pod = server.pods.base / "default" / "p" / "c" / "big.bin"
    assert hashlib.sha256(in_pod.read_bytes()).hexdigest() == digest
    got = await kube.run("cp", "default/p:big.bin", "back.bin", timeout=60)
    _clean(got.stderr)
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == digest


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b"echo:" + body)

    app = web.Application(client_max_size=8 << 20)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert isinstance(site._server, asyncio.Server)
    yield site._server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def _forwarded_port(process: asyncio.subprocess.Process) -> int:
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
    found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> 80\d\d", line)
    assert found, line
    return int(found.group(1))


async def _stop(process: asyncio.subprocess.Process) -> str:
    if process.returncode is None:
        process.terminate()
    _, err = await asyncio.wait_for(process.communicate(), 10)
    return err.decode()


async def test_port_forward(kube: Kubectl, server: KubesimServer, http_port: int) -> None:
    obj = pod("p", dict(SLEEPER, ports=[{"containerPort": 8080}]))
    obj["metadata"]["annotations"] = {PORTS_ANNOTATION: json.dumps({"8080": http_port})}
    await _pod(kube, server, obj)
    process = await kube.start("port-forward", "--address", "127.0.0.1", "pod/p", ":8080")
    try:
        local = await _forwarded_port(process)
        payload = os.urandom(1 << 20)
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # two connections: two stream pairs in one session
                async with session.post(f"http://127.0.0.1:{local}/x", data=payload) as r:
                    assert r.status == 200
                    assert await r.read() == b"echo:" + payload
    finally:
        err = await _stop(process)
    assert "error" not in err.lower(), err


async def test_port_forward_to_a_closed_port(kube: Kubectl, server: KubesimServer) -> None:
    await _pod(kube, server, pod("p", SLEEPER))
    sandbox = server.pods.sandboxes[("default", "p")]
    process = await kube.start("port-forward", "--address", "127.0.0.1", "pod/p", ":8081")
    try:
        local = await _forwarded_port(process)
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        await asyncio.wait_for(process.wait(), 10)
    finally:
        err = await _stop(process)
    # 1.32 prints "an error occurred forwarding L -> R: <text>", 1.37 logs it structured
    assert (
        f"an error occurred forwarding {local} -> 8081: error forwarding" in err
        or '"An error occurred forwarding" err="error forwarding' in err
    ), err
    assert (
        f"error forwarding port 8081 to pod {sandbox.sandbox_id}, uid : failed to execute "
        "portforward in network namespace"
    ) in err
    assert "dial tcp4 127.0.0.1:8081: connect: connection refused" in err
    assert "lost connection to pod" in err


async def test_logs_follow_and_tail(kube: Kubectl, server: KubesimServer) -> None:
    script = (
        "echo ready; while [ ! -e go ]; do sleep 0.05; done; "
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
    )
    ticker = {"name": "c", "image": "x", "command": ["sh", "-c", script]}
    await _pod(kube, server, pod("p", ticker, restartPolicy="Never"))
    process = await kube.start("logs", "-f", "p")
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 10) == b"ready\n"
    (server.pods.base / "default" / "p" / "c" / "go").touch()  # kubectl follows by now
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, str]] = []
    for _ in range(3):
        line = await asyncio.wait_for(process.stdout.readline(), 5)
        seen.append((loop.time(), line.decode()))
    assert [text for _, text in seen] == ["tick 1\n", "tick 2\n", "tick 3\n"]
    assert seen[-1][0] - seen[0][0] > 0.3  # lines arrive as printed
    main = server.pods.sandboxes[("default", "p")].containers["c"].process
    assert main is not None
    main.kill()
    await asyncio.wait_for(process.wait(), 10)
    assert process.returncode == 0
    tail = await kube.run("logs", "p", "--tail=2")
    last = int(seen[-1][1].split()[1])
    numbers = [int(line.split()[1]) for line in tail.stdout.splitlines()]
    assert len(numbers) == 2
    assert numbers[0] + 1 == numbers[1]
    assert numbers[0] >= last - 1


async def test_spdy_fallback_is_refused_clearly(kube: Kubectl, server: KubesimServer) -> None:
    await _pod(kube, server, pod("p", SLEEPER))
    kube_env = kube.env

    def spdy_env() -> dict[str, str]:
        env = kube_env()
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
        return env

    kube.env = spdy_env  # type: ignore[method-assign]
    refused = await kube.run("exec", "p", "--", "true", check=False)
    assert refused.returncode == 1
    why = (
        "kubesim serves pods/exec over WebSocket only; this SPDY/3.1 upgrade is not supported: "
        "use kubectl 1.30 or newer, without KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false\n"
    )
    # 1.32 shows the Status as such, 1.37 as an upgrade failure
    assert refused.stderr in (
        f"Error from server (BadRequest): {why}",
        f"error: unable to upgrade connection: {why}",
    ), refused.stderr
    forward = await kube.run("port-forward", "pod/p", ":8080", check=False, timeout=15)
    assert forward.returncode == 1
    assert (
        "kubesim serves pods/portforward over WebSocket only; this SPDY/3.1 upgrade is not "
        "supported: use kubectl 1.31 or newer, without KUBECTL_PORT_FORWARD_WEBSOCKETS=false"
    ) in forward.stderr, forward.stderr
