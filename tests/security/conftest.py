"""Fixtures for hostile-input and security-model tests.

``world`` is the proxy tests' in-process hub (real routes, forwarder, websocket tunnel, agent
executor, kubesim child). ``child_log`` records every request that reaches the kubesim child, and
``agent_log`` every stream the agent's executor is handed, so a test can prove that a hostile
request reached nothing at all.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from clusternet_aa.proxy.executor import Executor
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.streams import TunnelStream
from tests.proxy.conftest import world  # noqa: F401  (re-exported fixture)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    raw_path: str
    headers: tuple[tuple[str, str], ...]


@dataclass
class ChildLog:
    requests: list[SeenRequest] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [r.raw_path for r in self.requests]

    def clear(self) -> None:
        self.requests.clear()


@dataclass
class AgentLog:
    #: (executor, method or dial address, path) per stream handed to an agent.
    streams: list[tuple[Executor, str, str]] = field(default_factory=list)


@pytest.fixture
def child_log(monkeypatch: pytest.MonkeyPatch) -> ChildLog:
    """Must be requested before ``world`` so the child starts with the recording dispatch."""
    log = ChildLog()
    original: Callable[[KubesimServer, web.Request], Awaitable[web.StreamResponse]]
    original = KubesimServer.dispatch

    async def dispatch(self: KubesimServer, request: web.Request) -> web.StreamResponse:
        log.requests.append(
            SeenRequest(request.method, request.raw_path, tuple(request.headers.items()))
        )
        return await original(self, request)

    monkeypatch.setattr(KubesimServer, "dispatch", dispatch)
    return log


@pytest.fixture
def agent_log(monkeypatch: pytest.MonkeyPatch) -> AgentLog:
    log = AgentLog()
    original = Executor.__call__

    async def call(self: Executor, stream: TunnelStream) -> None:
        target = stream.target
        if isinstance(target, frames.HttpRequestHead):
            log.streams.append((self, target.method, target.path))
        else:
            log.streams.append((self, "dial", target.address))
        await original(self, stream)

    monkeypatch.setattr(Executor, "__call__", call)
    return log


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_request(
    host: str, port: int, ssl_context: ssl.SSLContext | None, request: bytes, timeout: float = 10
) -> RawResponse:
    """Send ``request`` bytes as they are (no client-side validation or normalisation) and
    read the answer until the server closes (ask for ``Connection: close``)."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
    )
    try:
        writer.write(request)
        await writer.drain()
        data = b""
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
                if _complete(data):
                    break
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass
    return _parse(data)


def _split(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def _complete(data: bytes) -> bool:
    if b"\r\n\r\n" not in data:
        return False
    _, headers, body = _split(data)
    if "content-length" in headers:
        return len(body) >= int(headers["content-length"])
    if headers.get("transfer-encoding") == "chunked":
        return body.endswith(b"0\r\n\r\n")
    return False


def _parse(data: bytes) -> RawResponse:
    status, headers, body = _split(data)
    if headers.get("transfer-encoding") == "chunked":
        out = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2 :]
        body = out
    return RawResponse(status, headers, body)
