"""port-forward: a SPDY/3.1 session tunnelled in WebSocket messages, dialing 127.0.0.1.

kubectl 1.31+ asks for ``SPDY/3.1+portforward.k8s.io``; kube-apiserver then relays the raw SPDY
session to the kubelet, whose port-forward server pairs an ``error`` and a ``data`` stream per
connection (by ``requestid``), and containerd dials the port inside the pod's network namespace.
Here the pod's port maps to a local port (see :meth:`PodRuntime.local_port`); a failed dial is
reported on the error stream in containerd's words, which kubectl prints as
``an error occurred forwarding L -> R: ...``. When either direction of a connection ends, the
other gets one second to finish before both streams are closed, as containerd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from clusternet_aa.sandbox.kubesim.pods import connect, spdy
from clusternet_aa.sandbox.kubesim.pods.runtime import PodRuntime, PodSandbox
from clusternet_aa.sandbox.kubesim.rest import Call
from clusternet_aa.sandbox.kubesim.types import Decision, RequestAttributes

logger = logging.getLogger(__name__)

TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
_CHUNK = 32 * 1024
#: containerd's grace for the second direction once the first has ended.
_LINGER = 1.0


@dataclass
class _Pair:
    """The error and data streams of one forwarded connection."""

    request_id: str
    port: int
    error_id: int = 0
    data_id: int = 0
    started: bool = False
    writer: asyncio.StreamWriter | None = None
    early: list[spdy.DataFrame] = field(default_factory=list)
    client_done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class PortForwardSession:
    """Serves one tunnelled SPDY session until the WebSocket closes."""

    def __init__(self, ws: web.WebSocketResponse, runtime: PodRuntime, sandbox: PodSandbox) -> None:
        self.ws = ws
        self.runtime = runtime
        self.sandbox = sandbox
        self.codec = spdy.HeaderCodec()
        self.parser = spdy.FrameParser()
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self._lock = asyncio.Lock()

    async def send(self, frame: bytes) -> None:
        if self.ws.closed:
            return
        async with self._lock:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(frame)

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if message.type != WSMsgType.BINARY:
                    continue
                for frame in self.parser.feed(message.data):
                    if isinstance(frame, spdy.ControlFrame):
                        await self._control(frame)
                    else:
                        await self._data(frame)
        except spdy.SpdyError as e:
            logger.debug("kubesim port-forward: dropping session: %s", e)
        finally:
            for pair in self.pairs.values():
                if pair.task is not None:
                    pair.task.cancel()
                if pair.writer is not None:
                    pair.writer.close()
            tasks = [p.task for p in self.pairs.values() if p.task is not None]
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await task
            if not self.ws.closed:
                await self.ws.close(code=1000)

    async def _control(self, frame: spdy.ControlFrame) -> None:
        if frame.type == spdy.SYN_STREAM:
            await self._syn_stream(frame.payload)
        elif frame.type == spdy.PING:
            await self.send(spdy.control(spdy.PING, 0, frame.payload))
        elif frame.type == spdy.RST_STREAM:
            pair = self.by_stream.get(spdy.stream_id_of(frame.payload))
            if pair is not None and pair.writer is not None:
                pair.writer.close()
        # SETTINGS, WINDOW_UPDATE, HEADERS and GOAWAY need no answer: the client closes next

    async def _syn_stream(self, payload: bytes) -> None:
        stream_id = spdy.stream_id_of(payload)
        headers = self.codec.syn_stream_headers(payload)
        kind = headers.get("streamtype", "")
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            port = 0
        if kind not in ("error", "data") or not 0 < port < 65536:
            await self.send(spdy.rst_stream(stream_id, spdy.RST_PROTOCOL_ERROR))
            return
        await self.send(self.codec.syn_reply(stream_id))
        request_id = headers.get("requestid") or str(
            stream_id if kind == "error" else stream_id - 2
        )
        pair = self.pairs.setdefault(request_id, _Pair(request_id, port))
        if kind == "error":
            pair.error_id = stream_id
        else:
            pair.data_id = stream_id
        self.by_stream[stream_id] = pair
        if pair.error_id and pair.data_id and not pair.started:
            pair.started = True
            pair.task = asyncio.ensure_future(self._forward(pair))

    async def _data(self, frame: spdy.DataFrame) -> None:
        pair = self.by_stream.get(frame.stream_id)
        if pair is None or frame.stream_id != pair.data_id:
            return  # the error stream only ever carries the client's FIN
        if pair.writer is None:
            pair.early.append(frame)
            return
        await self._deliver(pair, frame)

    async def _deliver(self, pair: _Pair, frame: spdy.DataFrame) -> None:
        assert pair.writer is not None
        if frame.data and not pair.writer.is_closing():
            pair.writer.write(frame.data)
            with contextlib.suppress(ConnectionError):
                await pair.writer.drain()
        if frame.fin:
            pair.client_done.set()

    def error_text(self, pair: _Pair, reason: str) -> str:
        """containerd's port-forward failure, as the kubelet prefixes it."""
        sandbox = self.sandbox
        return (
            f"error forwarding port {pair.port} to pod {sandbox.sandbox_id}, uid : failed to "
            f'execute portforward in network namespace "{sandbox.netns}": failed to connect to '
            f'localhost:{pair.port} inside namespace "{sandbox.sandbox_id}", IPv4: dial tcp4 '
            f"127.0.0.1:{pair.port}: connect: {reason} IPv6 dial tcp6: address localhost: no "
            "suitable address found "
        )

    async def _forward(self, pair: _Pair) -> None:
        local = self.runtime.local_port(self.sandbox, pair.port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
        except OSError as e:
            reason = (
                "connection refused"
                if isinstance(e, ConnectionRefusedError)
                else (e.strerror or str(e)).lower()
            )
            await self.send(spdy.data(pair.error_id, self.error_text(pair, reason).encode()))
            await self.send(spdy.data(pair.error_id, fin=True))
            await self.send(spdy.data(pair.data_id, fin=True))
            return
        pair.writer = writer
        for frame in pair.early:
            await self._deliver(pair, frame)
        pair.early.clear()
        pod_to_client = asyncio.ensure_future(self._copy_out(pair, reader))
        client_to_pod = asyncio.ensure_future(pair.client_done.wait())
        try:
            _, pending = await asyncio.wait(
                {pod_to_client, client_to_pod}, return_when=asyncio.FIRST_COMPLETED
            )
            if pending:
                await asyncio.wait(pending, timeout=_LINGER)
        finally:
            for task in (pod_to_client, client_to_pod):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self.send(spdy.data(pair.data_id, fin=True))
        await self.send(spdy.data(pair.error_id, fin=True))

    async def _copy_out(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(_CHUNK):
                await self.send(spdy.data(pair.data_id, chunk))


class PortForwardHandler:
    """The ``pods/portforward`` handler of one server."""

    def __init__(
        self, runtime: PodRuntime, authorize: Callable[[RequestAttributes], Decision]
    ) -> None:
        self.runtime = runtime
        self.authorize = authorize

    async def __call__(self, call: Call) -> web.StreamResponse:
        connect.check_create(call, self.authorize)
        pod = self.runtime.service.get(call.resource, call.namespace, call.info.name)
        connect.require_node(pod)
        connect.require_upgrade(call)
        meta = pod["metadata"]
        sandbox = self.runtime.sandbox(
            str(meta.get("namespace", "")), str(meta["name"]), str(meta.get("uid", ""))
        )
        ws = web.WebSocketResponse(
            protocols=(TUNNEL_PROTOCOL,), timeout=5.0, max_msg_size=16 * 1024 * 1024
        )
        if ws.can_prepare(call.request).protocol != TUNNEL_PROTOCOL:
            # kube hands other WebSocket port-forwards to the kubelet's legacy v4 protocol
            return web.Response(status=403)
        if sandbox is None:
            return web.Response(status=404, text="pod does not exist")
        await ws.prepare(call.request)
        await PortForwardSession(ws, self.runtime, sandbox).run()
        return ws
