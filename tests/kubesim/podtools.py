"""Helpers for the pod runtime tests: an instance that runs pods, and raw stream clients."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim


@contextlib.asynccontextmanager
async def pod_sim(tmp_path: Path, **runtime: Any) -> AsyncIterator[KubesimServer]:
    runtime.setdefault("workdir", tmp_path / "pods")
    runtime.setdefault("restart_delay", 0.2)
    config = KubesimConfig(pod_runtime=PodRuntimeConfig(**runtime))
    async with running_kubesim(config, state_dir=tmp_path / "state") as server:
        yield server


def pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": list(containers) or [{"name": "c", "image": "busybox"}], **spec},
    }


@dataclass
class ExecResult:
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] | None = None
    raw_status: bytes = b""
    close_code: int | None = None
    first: bytes | None = None
    messages: list[bytes] = field(default_factory=list)


class PodClient:
    """Raw HTTP and WebSocket access to one instance (admin token unless told otherwise)."""

    def __init__(self, server: KubesimServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.server.admin_token}"}

    async def create(self, obj: dict[str, Any], *, settle: bool = True) -> dict[str, Any]:
        ns = obj["metadata"].get("namespace", "default")
        async with self.session.post(
            f"{self.server.url}/api/v1/namespaces/{ns}/pods", json=obj, headers=self.headers()
        ) as response:
            body: dict[str, Any] = await response.json()
            assert response.status == 201, body
        if settle:
            await self.server.settle()
            await self.server.pods.settle()
        return body

    async def get(self, name: str) -> dict[str, Any]:
        async with self.session.get(
            f"{self.server.url}/api/v1/namespaces/default/pods/{name}", headers=self.headers()
        ) as response:
            body: dict[str, Any] = await response.json()
            return body

    async def delete(self, name: str) -> None:
        async with self.session.delete(
            f"{self.server.url}/api/v1/namespaces/default/pods/{name}", headers=self.headers()
        ) as response:
            assert response.status == 200, await response.text()
        await self.server.settle()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any, str]:
        all_headers = self.headers(token)
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.server.url + path, headers=all_headers
        ) as response:
            text = await response.text()
            try:
                body: Any = json.loads(text)
            except ValueError:
                body = text
            return response.status, body, response.headers.get("Content-Type", "")

    def ws(self, path: str, protocols: Sequence[str], *, token: str | None = None) -> Any:
        return self.session.ws_connect(
            self.server.url + path,
            protocols=tuple(protocols),
            headers=self.headers(token),
            autoclose=False,
            max_msg_size=0,
        )

    async def exec(
        self,
        name: str,
        command: Sequence[str],
        *,
        stdin: bytes | None = None,
        tty: bool = False,
        protocol: str = "v5.channel.k8s.io",
        container: str = "",
        resize: tuple[int, int] | None = None,
        subresource: str = "exec",
        token: str | None = None,
    ) -> ExecResult:
        query: list[tuple[str, str]] = [("command", c) for c in command]
        query += [("stdout", "true")]
        if not tty:
            query.append(("stderr", "true"))
        if stdin is not None:
            query.append(("stdin", "true"))
        if tty:
            query.append(("tty", "true"))
        if container:
            query.append(("container", container))
        path = f"/api/v1/namespaces/default/pods/{name}/{subresource}?{urlencode(query)}"
        result = ExecResult()
        async with self.ws(path, [protocol], token=token) as ws:
            assert ws.protocol == protocol
            if resize is not None:
                size = json.dumps({"Width": resize[0], "Height": resize[1]}).encode()
                await ws.send_bytes(b"\x04" + size + b"\n")
            if stdin is not None:
                for start in range(0, len(stdin), 32 * 1024):
                    await ws.send_bytes(b"\x00" + stdin[start : start + 32 * 1024])
                if protocol.startswith("v5"):
                    await ws.send_bytes(b"\xff\x00")
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:  # the base64 protocols
                    text: str = message.data
                    data = bytes([ord(text[0]) - ord("0")]) + base64.b64decode(text[1:])
                elif message.type == aiohttp.WSMsgType.BINARY:
                    data = message.data
                else:
                    continue
                result.messages.append(data)
                if result.first is None:
                    result.first = data
                if data[:1] == b"\x01":
                    result.stdout += data[1:]
                elif data[:1] == b"\x02":
                    result.stderr += data[1:]
                elif data[:1] == b"\x03":
                    result.raw_status += data[1:]
            result.close_code = ws.close_code
        if result.raw_status:
            with contextlib.suppress(ValueError):
                result.status = json.loads(result.raw_status)
        return result


@contextlib.asynccontextmanager
async def pod_client(server: KubesimServer) -> AsyncIterator[PodClient]:
    connector = aiohttp.TCPConnector(ssl=server.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        yield PodClient(server, session)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


async def eventually(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
