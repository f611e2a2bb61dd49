"""exec and attach over WebSocket: the ``*.channel.k8s.io`` stream protocols.

Every message is one channel byte and a payload: 0 stdin, 1 stdout, 2 stderr, 3 error/status,
4 resize. ``v5.channel.k8s.io`` (kubectl 1.30+) is what kube-apiserver's stream translator
serves itself, with the ``[255, channel]`` half-close; older protocols go through to the
kubelet's own WebSocket server (``v4.channel.k8s.io`` as used by kubernetes_asyncio, its
base64 text variants, and the v1 ``channel.k8s.io`` whose error channel is plain text). The
end of a session is one Status on channel 3, then close code 1000: kubectl reads channel 3 to
EOF and only a normal close gives it one. Error wording follows the path a request takes in a
real cluster, translator and containerd included, since kubectl prints it verbatim.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from clusternet_aa.sandbox.kubesim.pods import connect
from clusternet_aa.sandbox.kubesim.pods.process import STDERR, STDOUT, LocalProcess, StartError
from clusternet_aa.sandbox.kubesim.pods.runtime import Container, PodRuntime
from clusternet_aa.sandbox.kubesim.rest import Call
from clusternet_aa.sandbox.kubesim.types import Decision, Obj, RequestAttributes

logger = logging.getLogger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
#: In order of preference when a client offers several.
PROTOCOLS = (V5, V4, V4_BASE64, V1, V1_BASE64)
STDIN, ERROR, RESIZE = 0, 3, 4
CLOSE_SIGNAL = 255
#: Seconds aiohttp waits for the client's answer to our close frame.
_CLOSE_TIMEOUT = 5.0


def status_json(status: Obj) -> bytes:
    return json.dumps(status, separators=(",", ":")).encode()


def success() -> Obj:
    return {"metadata": {}, "status": "Success"}


def non_zero_exit(code: int, message: str) -> Obj:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {message}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(error: str) -> Obj:
    """``apierrors.NewInternalError(errors.New(error))`` as JSON."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {error}",
        "reason": "InternalError",
        "details": {"causes": [{"message": error}]},
        "code": 500,
    }


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def parse(cls, request: web.Request) -> StreamOptions:
        tty = connect.query_bool(request, "tty")
        return cls(
            stdin=connect.query_bool(request, "stdin"),
            stdout=connect.query_bool(request, "stdout"),
            # the kubelet drops stderr under a tty: the terminal merges it into stdout
            stderr=connect.query_bool(request, "stderr") and not tty,
            tty=tty,
        )


class ChannelSession:
    """One upgraded exec/attach connection, in whichever channel protocol was negotiated."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str, options: StreamOptions) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self.base64 = protocol in (V4_BASE64, V1_BASE64)
        self.gone = False
        self._resize = bytearray()
        # Output pumps and the final Status write from different tasks; aiohttp's websocket
        # writer does not serialize concurrent sends, and interleaved frames corrupt the stream.
        self._send_lock = asyncio.Lock()

    @property
    def translated(self) -> bool:
        """Served by kube-apiserver's translator (v5) rather than the kubelet itself."""
        return self.protocol == V5

    async def send(self, channel: int, payload: bytes) -> None:
        if self.gone or self.ws.closed:
            return
        try:
            async with self._send_lock:
                if self.base64:
                    text = chr(ord("0") + channel) + base64.b64encode(payload).decode()
                    await self.ws.send_str(text)
                else:
                    await self.ws.send_bytes(bytes([channel]) + payload)
        except ConnectionError:
            self.gone = True

    async def announce(self) -> None:
        """The empty message on the lowest writable channel that says "connected"."""
        if self.options.stdout:
            await self.send(STDOUT, b"")
        elif self.options.stderr:
            await self.send(STDERR, b"")
        else:
            await self.send(ERROR, b"")

    async def output(self, stream: int, chunk: bytes) -> None:
        if stream == STDOUT and self.options.stdout:
            await self.send(STDOUT, chunk)
        elif stream == STDERR and self.options.stderr:
            await self.send(STDERR, chunk)

    async def finish(self, status: Obj) -> None:
        """Write the Status (v4+: JSON; v1: the message, nothing on success), close with 1000."""
        if self.protocol in (V1, V1_BASE64):
            if status.get("status") != "Success":
                await self.send(ERROR, str(status.get("message", "")).encode())
        else:
            await self.send(ERROR, status_json(status))
        if not self.ws.closed:
            async with self._send_lock:
                with contextlib.suppress(ConnectionError):
                    await self.ws.close(code=1000)

    async def receive(
        self,
        on_stdin: Callable[[bytes], object],
        on_close_stdin: Callable[[], object],
        on_resize: Callable[[int, int], None],
    ) -> None:
        """Read client messages until the client closes; awaits what the callbacks return."""
        async for message in self.ws:
            if message.type == WSMsgType.BINARY and not self.base64:
                raw: bytes = message.data
            elif message.type == WSMsgType.TEXT and self.base64:
                text: str = message.data
                if not text:
                    continue
                try:
                    raw = bytes([ord(text[0]) - ord("0")]) + base64.b64decode(text[1:])
                except ValueError:
                    continue
            else:
                continue
            if not raw:
                continue
            channel, payload = raw[0], raw[1:]
            result: object = None
            if channel == CLOSE_SIGNAL and self.protocol == V5:
                if payload[:1] == bytes([STDIN]):
                    result = on_close_stdin()
            elif channel == STDIN:
                result = on_stdin(payload)
            elif channel == RESIZE:
                self._on_resize(payload, on_resize)
            if asyncio.iscoroutine(result):
                await result
        self.gone = True

    def _on_resize(self, payload: bytes, on_resize: Callable[[int, int], None]) -> None:
        self._resize += payload
        decoder = json.JSONDecoder()
        text = self._resize.decode(errors="replace")
        position = 0
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            try:
                size, position = decoder.raw_decode(text, position)
            except ValueError:
                break
            if isinstance(size, dict):
                on_resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
        self._resize = bytearray(text[position:].encode())


async def open_session(call: Call, options: StreamOptions) -> ChannelSession | web.Response:
    """Upgrade; a client offering only protocols we lack gets the kubelet's 403."""
    ws = web.WebSocketResponse(
        protocols=PROTOCOLS, timeout=_CLOSE_TIMEOUT, max_msg_size=16 * 1024 * 1024
    )
    offered = [
        p.strip()
        for p in call.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
        if p.strip()
    ]
    ready = ws.can_prepare(call.request)
    if offered and not ready.protocol:
        return web.Response(status=403)
    await ws.prepare(call.request)
    return ChannelSession(ws, ready.protocol or V1, options)


class ExecHandlers:
    """The ``pods/exec`` and ``pods/attach`` handlers of one server."""

    def __init__(
        self, runtime: PodRuntime, authorize: Callable[[RequestAttributes], Decision]
    ) -> None:
        self.runtime = runtime
        self.authorize = authorize

    def _target(self, call: Call) -> tuple[Obj, str]:
        connect.check_create(call, self.authorize)
        pod = self.runtime.service.get(call.resource, call.namespace, call.info.name)
        name = connect.choose_container(pod, call.request.query.get("container", ""))
        connect.require_node(pod)
        connect.require_upgrade(call)
        return pod, name

    def _running(self, pod: Obj, name: str) -> Container | None:
        meta = pod["metadata"]
        sandbox = self.runtime.sandbox(
            str(meta.get("namespace", "")), str(meta["name"]), str(meta.get("uid", ""))
        )
        container = None if sandbox is None else sandbox.containers.get(name)
        if container is None or not container.running:
            return None
        return container

    async def _refuse(
        self, call: Call, options: StreamOptions, problem: str, code: int
    ) -> web.StreamResponse:
        """A node-side refusal seen through the translator: a Status after the upgrade."""
        opened = await open_session(call, options)
        if isinstance(opened, web.Response):
            return opened
        if opened.translated:
            await opened.announce()
            await opened.finish(internal_error(f"unable to upgrade connection: {problem}"))
            return opened.ws
        await opened.ws.close(code=1000)
        return opened.ws

    async def _precheck(
        self, call: Call, options: StreamOptions, container_name: str, container: Container | None
    ) -> web.StreamResponse | None:
        problem = ""
        code = 500
        if not (options.stdin or options.stdout or options.stderr):
            problem, code = "you must specify at least 1 of stdin, stdout, stderr", 400
        elif container is None:
            problem = f'container not found ("{container_name}")'
        if not problem:
            return None
        offered = call.request.headers.get("Sec-WebSocket-Protocol", "")
        if V5 in [p.strip() for p in offered.split(",")]:
            return await self._refuse(call, options, problem, code)
        response = web.Response(status=code, text=problem)
        return response

    async def exec(self, call: Call) -> web.StreamResponse:
        pod, name = self._target(call)
        options = StreamOptions.parse(call.request)
        command = call.request.query.getall("command", [])
        container = self._running(pod, name)
        refused = await self._precheck(call, options, name, container)
        if refused is not None:
            return refused
        assert container is not None
        opened = await open_session(call, options)
        if isinstance(opened, web.Response):
            return opened
        session = opened
        await session.announce()
        try:
            process = await self.runtime.start_exec(
                container, command, stdin=options.stdin, tty=options.tty
            )
        except StartError as e:
            exec_id = connect_exec_id(container, command)
            failure = (
                "error executing command in container: failed to exec in container: failed to "
                f'start exec "{exec_id}": OCI runtime exec failed: exec failed: unable to start '
                f"container process: {e.detail}: unknown"
            )
            status = internal_error(failure)
            if session.translated:
                status = internal_error(str(status["message"]))
            await session.finish(status)
            return session.ws
        try:
            status = await self._pump(session, process, command)
        finally:
            self.runtime.finish_exec(container, process)
        await session.finish(status)
        return session.ws

    async def _pump(
        self, session: ChannelSession, process: LocalProcess, command: list[str]
    ) -> Obj:
        reader = asyncio.ensure_future(
            session.receive(process.write, process.close_stdin, process.resize)
        )
        runner = asyncio.ensure_future(process.run(session.output))
        try:
            await asyncio.wait({reader, runner}, return_when=asyncio.FIRST_COMPLETED)
            if not runner.done():  # the client went away first: so does its command
                process.kill()
            code = await runner
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if code < 0:
            code = 128 - code
        if code == 0:
            return success()
        if session.translated:
            return non_zero_exit(code, f"command terminated with exit code {code}")
        argv = "[" + " ".join(command) + "]"
        return non_zero_exit(code, f"error executing command {argv}, exit code {code}")

    async def attach(self, call: Call) -> web.StreamResponse:
        pod, name = self._target(call)
        options = StreamOptions.parse(call.request)
        container = self._running(pod, name)
        refused = await self._precheck(call, options, name, container)
        if refused is not None:
            return refused
        assert container is not None
        opened = await open_session(call, options)
        if isinstance(opened, web.Response):
            return opened
        session = opened
        await session.announce()
        process = container.process
        container_stdin = bool(container.spec.get("stdin"))

        async def to_stdin(data: bytes) -> None:
            if process is not None and options.stdin and container_stdin:
                await process.write(data)

        async def close_stdin() -> None:
            if process is not None and options.stdin and container_stdin:
                await process.close_stdin()

        def resize(width: int, height: int) -> None:
            if process is not None:
                process.resize(width, height)

        container.listeners.add(session.output)
        reader = asyncio.ensure_future(session.receive(to_stdin, close_stdin, resize))
        ended = asyncio.ensure_future(container.instance_done.wait())
        try:
            await asyncio.wait({reader, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            container.listeners.discard(session.output)
            reader.cancel()
            ended.cancel()
            for task in (reader, ended):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if options.stdin and container.spec.get("stdinOnce") and process is not None:
            await process.close_stdin()
        await session.finish(success())
        return session.ws


def connect_exec_id(container: Container, command: list[str]) -> str:
    """A containerd-style 64-hex exec id (what its error messages quote)."""
    import hashlib
    import os

    seed = f"{container.container_id}/{' '.join(command)}/{os.urandom(8).hex()}"
    return hashlib.sha256(seed.encode()).hexdigest()
