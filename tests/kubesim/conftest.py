"""Fixtures for kubesim tests: a running instance, a raw HTTP client and a kubectl runner."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim

VENV_KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


class Raw:
    """A raw HTTP client for exact status codes and bodies (admin token by default)."""

    def __init__(self, session: aiohttp.ClientSession, server: KubesimServer) -> None:
        self.session = session
        self.server = server

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Reply:
        all_headers = {"Authorization": f"Bearer {token or self.server.admin_token}"}
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.server.url + path, data=data, headers=all_headers
        ) as response:
            raw = await response.read()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Reply(response.status, parsed, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, content_type: str, **kw: Any) -> Reply:
        return await self.request("PATCH", path, body, content_type=content_type, **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("DELETE", path, body, **kw)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[KubesimServer]:
    async with running_kubesim(state_dir=tmp_path / "state") as server:
        yield server


@pytest.fixture
async def raw(sim: KubesimServer) -> AsyncIterator[Raw]:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield Raw(session, sim)


def configmap(name: str, namespace: str = "default", **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"k": "v"},
    }
    obj.update(extra)
    return obj


@dataclass
class Kubectl:
    """Runs a real kubectl binary against one instance, with its own HOME and cache."""

    binary: Path
    kubeconfig: Path
    home: Path

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.home / "cache"),
        }

    async def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 30
    ) -> Result:
        """Run kubectl without blocking the loop the in-process server runs on."""
        process = await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate(stdin.encode() if stdin else None)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        result = Result(process.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(self.binary),
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def kubectl_binaries() -> list[Path]:
    found = [VENV_KUBECTL] if VENV_KUBECTL.exists() else []
    system = shutil.which("kubectl", path="/usr/bin:/usr/local/bin")
    if system is not None and Path(system).resolve() != VENV_KUBECTL.resolve():
        found.append(Path(system))
    return found


@pytest.fixture(params=kubectl_binaries(), ids=lambda p: str(p))
def kubectl_binary(request: pytest.FixtureRequest) -> Path:
    binary: Path = request.param
    return binary


@pytest.fixture
def kubectl(sim: KubesimServer, kubectl_binary: Path, tmp_path: Path) -> Kubectl:
    assert sim.config.state_dir is not None
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(kubectl_binary, sim.config.state_dir / "admin.kubeconfig", home)


def names(items: Sequence[dict[str, Any]]) -> list[str]:
    return [str(i["metadata"]["name"]) for i in items]
