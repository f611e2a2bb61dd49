"""port-forward: SPDY/3.1 in WebSocket messages to real local ports, driven by a raw client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusternet_aa.sandbox.kubesim.pods import PORTS_ANNOTATION, spdy
from tests.kubesim.podtools import PodClient, free_port, pod, pod_client, pod_sim

PF = "/api/v1/namespaces/default/pods/p/portforward"
TUNNEL = "SPDY/3.1+portforward.k8s.io"


class SpdyClient:
    """The client half of kubectl's tunnelled session, frame by frame."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.codec = spdy.HeaderCodec()
        self.parser = spdy.FrameParser()
        self.frames: list[spdy.Frame] = []

    async def send(self, frame: bytes, *, split: bool = False) -> None:
        if split:  # as spdystream does: fields in separate messages
            for start in range(0, len(frame), 3):
                await self.ws.send_bytes(frame[start : start + 3])
        else:
            await self.ws.send_bytes(frame)

    async def syn(self, stream_id: int, headers: dict[str, str], *, split: bool = False) -> None:
        payload = struct.pack(">IIBB", stream_id, 0, 0, 0) + self.codec.encode(headers)
        await self.send(spdy.control(spdy.SYN_STREAM, 0, payload), split=split)

    async def next(self) -> spdy.Frame:
        while not self.frames:
            message = await asyncio.wait_for(self.ws.receive(), 5)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            self.frames.extend(self.parser.feed(message.data))
        return self.frames.pop(0)

    async def data(self) -> spdy.DataFrame:
        frame = await self.next()
        assert isinstance(frame, spdy.DataFrame)
        return frame

    async def reply_to(self, stream_id: int) -> None:
        frame = await self.next()
        assert isinstance(frame, spdy.ControlFrame)
        assert frame.type == spdy.SYN_REPLY
        assert spdy.stream_id_of(frame.payload) == stream_id
        assert self.codec.decode(frame.payload[4:]) == {}

    async def open_pair(self, port: int, request: int) -> tuple[int, int]:
        error_id, data_id = 1 + 4 * request, 3 + 4 * request
        await self.syn(
            error_id,
            {"streamtype": "error", "port": str(port), "requestid": str(request)},
            split=True,
        )
        await self.reply_to(error_id)
        await self.send(spdy.data(error_id, fin=True))
        await self.syn(
            data_id, {"streamtype": "data", "port": str(port), "requestid": str(request)}
        )
        await self.reply_to(data_id)
        return error_id, data_id


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[PodClient]:
    async with pod_sim(tmp_path, ports={8081: free_port()}) as sim, pod_client(sim) as c:
        yield c


async def test_bytes_both_ways_through_a_mapped_port(client: PodClient, echo_port: int) -> None:
    obj = pod("p", {"name": "c", "image": "x", "ports": [{"containerPort": 8080}]})
    obj["metadata"]["annotations"] = {PORTS_ANNOTATION: json.dumps({"8080": echo_port})}
    await client.create(obj)
    async with client.ws(PF, [TUNNEL]) as ws:
        assert ws.protocol == TUNNEL
        session = SpdyClient(ws)
        await session.send(spdy.control(spdy.PING, 0, struct.pack(">I", 1)))
        pong = await session.next()
        assert isinstance(pong, spdy.ControlFrame)
        assert pong.type == spdy.PING
        assert pong.payload == struct.pack(">I", 1)
        error_id, data_id = await session.open_pair(8080, 0)
        payload = bytes(range(256)) * 4096
        await session.send(spdy.data(data_id, payload[: len(payload) // 2]))
        await session.send(spdy.data(data_id, payload[len(payload) // 2 :]))
        received = b""
        while len(received) < len(payload):
            frame = await session.next()
            assert isinstance(frame, spdy.DataFrame)
            assert frame.stream_id == data_id
            received += frame.data
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        await session.send(spdy.data(data_id, fin=True))
        ends = {(f.stream_id, f.fin, f.data) for f in [await session.data(), await session.data()]}
        assert ends == {(data_id, True, b""), (error_id, True, b"")}
        await ws.close()


async def test_closed_port_reports_containerds_error(client: PodClient) -> None:
    await client.create(pod("p", {"name": "c", "image": "x"}))
    sandbox = client.server.pods.sandboxes[("default", "p")]
    async with client.ws(PF, [TUNNEL]) as ws:
        session = SpdyClient(ws)
        error_id, data_id = await session.open_pair(8081, 0)
        message = await session.next()
        assert isinstance(message, spdy.DataFrame)
        assert message.stream_id == error_id
        assert message.data.decode() == (
            f"error forwarding port 8081 to pod {sandbox.sandbox_id}, uid : failed to execute "
            f'portforward in network namespace "{sandbox.netns}": failed to connect to '
            f'localhost:8081 inside namespace "{sandbox.sandbox_id}", IPv4: dial tcp4 '
            "127.0.0.1:8081: connect: connection refused IPv6 dial tcp6: address localhost: "
            "no suitable address found "
        )
        assert re.fullmatch(r"[0-9a-f]{64}", sandbox.sandbox_id)
        rest = {(f.stream_id, f.fin) for f in [await session.data(), await session.data()]}
        assert rest == {(error_id, True), (data_id, True)}
        await ws.close()


async def test_streams_without_port_are_reset(client: PodClient) -> None:
    await client.create(pod("p", {"name": "c", "image": "x"}))
    async with client.ws(PF, [TUNNEL]) as ws:
        session = SpdyClient(ws)
        await session.syn(1, {"streamtype": "error", "requestid": "0"})
        frame = await session.next()
        assert isinstance(frame, spdy.ControlFrame)
        assert frame.type == spdy.RST_STREAM
        await ws.close()


async def test_portforward_refusals(client: PodClient) -> None:
    await client.create(pod("p", {"name": "c", "image": "x"}))
    status, body, _ = await client.request("GET", PF)
    assert (status, body["message"]) == (400, "Upgrade request required")
    spdy_upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "SPDY/3.1",
        "X-Stream-Protocol-Version": "portforward.k8s.io",
    }
    status, body, _ = await client.request("POST", PF, headers=spdy_upgrade)
    assert status == 400
    assert "KUBECTL_PORT_FORWARD_WEBSOCKETS=false" in body["message"]


def test_dictionary_is_spdy3s() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
