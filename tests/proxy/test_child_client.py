"""The agent's lean HTTP/1.1 client to its child API server, end to end over a tunnel.

A scripted HTTP server on 127.0.0.1 plays the child, so each test decides exactly what bytes
the child answers (chunked, Content-Length, until close, 100 Continue, garbage, a connection
closed behind the pool's back) and sees exactly what bytes the agent sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import pytest

from clusternet_aa.identity import METADATA_KEY, UserInfo
from clusternet_aa.proxy import headers as hop
from clusternet_aa.proxy.child_client import ChildClient, Origin, _Connection, _request_head
from clusternet_aa.proxy.executor import BODY_KEY, CONTENT_LENGTH_KEY, ChildApiserver, Executor
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import memory_pair

ALICE = UserInfo(name="alice", uid="u-1", groups=("dev", "system:authenticated"))


@dataclass
class Request:
    head: bytes
    body: bytes


@dataclass
class Child:
    """A scripted child API server: ``answer`` writes the response to each request."""

    answer: Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lower = head.lower()
                body = b""
                if b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                elif b"content-length:" in lower:
                    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                request = Request(head, body)
                self.requests.append(request)
                if not await self.answer(request, writer):
                    return
        finally:
            writer.close()


@pytest.fixture
async def child_server() -> AsyncIterator[Callable[..., Awaitable[Child]]]:
    servers: list[asyncio.Server] = []

    async def make(answer: Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]) -> Child:
        child = Child(answer)
        server = await asyncio.start_server(child.serve, "127.0.0.1", 0)
        servers.append(server)
        child.port = server.sockets[0].getsockname()[1]
        return child

    yield make
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def tunnel() -> AsyncIterator[Callable[[Executor], Awaitable[Session]]]:
    """(hub session) whose agent side serves streams with the given executor."""
    sessions: list[Session] = []

    async def make(executor: Executor) -> Session:
        a, b = memory_pair()
        agent = Session(a, Role.CLIENT, handler=executor, name="agent")
        hub = Session(b, Role.SERVER, name="hub")
        agent.start()
        hub.start()
        sessions.extend((agent, hub))
        await hub.wait_ready()
        return hub

    yield make
    for session in sessions:
        await session.close(ErrorCode.CANCEL, "test over", grace=1)


def executor_for(child: Child, **kwargs: object) -> Executor:
    return Executor(
        ChildApiserver(url=f"http://127.0.0.1:{child.port}", token=lambda: "agent-token"),
        **kwargs,  # type: ignore[arg-type]
    )


async def request(
    hub: Session,
    method: str = "GET",
    path: str = "/api/v1/pods",
    headers: frames.Headers = (),
    body: bytes | None = None,
) -> TunnelStream:
    metadata = {METADATA_KEY: ALICE.to_metadata(), BODY_KEY: body is not None}
    stream = await hub.open_stream(frames.HttpRequestHead(method, path, headers), metadata)
    if body is not None:
        await stream.write_all(body)
    stream.write_eof()
    return stream


async def read_all(stream: TunnelStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def test_content_length_answers_reuse_one_connection(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b'{"kind":"PodList"}', b"Content-Type: application/json\r\n"))
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for _ in range(3):
            stream = await request(hub, headers=(("Accept", "application/json"),))
            head = await stream.response()
            assert head.status == 200
            assert ("Content-Type", "application/json") in head.headers
            assert head.metadata[CONTENT_LENGTH_KEY] == len(b'{"kind":"PodList"}')
            assert await read_all(stream) == b'{"kind":"PodList"}'
        assert child.connections == 1
        assert executor.connections_opened == 1
    first = child.requests[0].head.decode()
    assert first.startswith("GET /api/v1/pods HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{child.port}\r\n" in first
    assert "Authorization: Bearer agent-token\r\n" in first
    assert "Impersonate-User: alice\r\n" in first
    assert "Accept: application/json\r\n" in first
    assert "Content-Length" not in first  # a GET without a body sends none


async def test_chunked_watch_streams_each_event_before_the_end(child_server, tunnel) -> None:
    more = asyncio.Event()

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await more.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub, path="/api/v1/pods?watch=true")
        head = await stream.response()
        assert CONTENT_LENGTH_KEY not in head.metadata
        assert all(name.lower() != "transfer-encoding" for name, _ in head.headers)
        assert await asyncio.wait_for(stream.read(), 5) == b"first"
        more.set()
        assert await read_all(stream) == b"second"


async def test_body_until_close_and_no_reuse(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        return False

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for _ in range(2):
            stream = await request(hub)
            assert (await stream.response()).status == 200
            assert await read_all(stream) == b"all of it"
        assert executor.connections_opened == 2


async def test_head_and_no_content_answers_end_without_a_body(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        if req.head.startswith(b"HEAD"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub, method="HEAD")
        head = await stream.response()
        assert (head.status, head.metadata[CONTENT_LENGTH_KEY]) == (200, 5)
        assert await asyncio.wait_for(read_all(stream), 5) == b""
        stream = await request(hub, method="DELETE")
        assert (await stream.response()).status == 204
        assert await asyncio.wait_for(read_all(stream), 5) == b""
        assert executor.connections_opened == 1


async def test_request_bodies_with_length_and_chunked(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        return True

    child = await child_server(answer)
    payload = b'{"metadata":{"name":"x"}}' * 4000  # 100 KB: several DATA frames
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(
            hub, "POST", headers=(("Content-Length", str(len(payload))),), body=payload
        )
        assert (await stream.response()).status == 201
        assert await read_all(stream) == b"ok"
        stream = await request(hub, "PUT", body=payload)
        assert (await stream.response()).status == 201
        assert await read_all(stream) == b"ok"
        stream = await request(hub, "POST")
        assert (await stream.response()).status == 201
        assert await read_all(stream) == b"ok"
    with_length, chunked, empty = child.requests
    assert with_length.body == payload
    assert b"Transfer-Encoding" not in with_length.head
    assert chunked.body == payload
    assert b"Transfer-Encoding: chunked\r\n" in chunked.head
    assert empty.body == b""
    assert b"Content-Length: 0\r\n" in empty.head


async def test_interim_100_continue_is_skipped(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"done"))
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub)
        assert (await stream.response()).status == 200
        assert await read_all(stream) == b"done"


async def test_a_pooled_connection_closed_by_the_child_is_replaced(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"fine"))
        await writer.drain()
        return False  # closes without saying Connection: close (an idle timeout, say)

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for _ in range(3):
            stream = await request(hub)
            assert (await stream.response()).status == 200
            assert await read_all(stream) == b"fine"
            await asyncio.sleep(0.05)  # let the close arrive while the connection is idle
        assert child.connections == 3


async def test_garbage_and_truncated_answers_reset_the_stream(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        if b"garbage" in req.head:
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
        await writer.drain()
        return False

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub, path="/garbage")
        with pytest.raises(StreamResetError) as before_head:
            await stream.response()
        assert before_head.value.code is ErrorCode.DIAL_FAILED
        stream = await request(hub, path="/truncated")
        assert (await stream.response()).status == 200
        with pytest.raises(StreamResetError) as mid_body:
            await read_all(stream)
        assert mid_body.value.code is ErrorCode.INTERNAL_ERROR


async def test_unreachable_child_is_dial_failed(tunnel) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with Executor(ChildApiserver(url=f"http://127.0.0.1:{port}")) as executor:
        hub = await tunnel(executor)
        stream = await request(hub)
        with pytest.raises(StreamResetError) as reset:
            await stream.response()
        assert reset.value.code is ErrorCode.DIAL_FAILED


async def test_idle_connections_are_bounded(child_server) -> None:
    release = asyncio.Event()

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(ok(b"x"))
        return True

    child = await child_server(answer)
    origin = Origin("127.0.0.1", child.port, None, f"127.0.0.1:{child.port}")
    client = ChildClient(max_idle=2)

    calls: list[asyncio.Future[None]] = []

    async def handler(stream: TunnelStream) -> None:
        call = asyncio.ensure_future(
            client.forward(stream, origin, "GET", "/", b"\r\n", chunked=False, has_body=False)
        )
        calls.append(call)
        await call

    a, b = memory_pair()
    agent_side = Session(a, Role.CLIENT, handler=handler)
    hub_side = Session(b, Role.SERVER)
    agent_side.start()
    hub_side.start()
    try:
        await hub_side.wait_ready()
        streams = [
            await hub_side.open_stream(frames.HttpRequestHead("GET", "/", ())) for _ in range(5)
        ]
        await asyncio.sleep(0.1)
        assert child.connections == 5  # connections in use are not limited
        release.set()
        for stream in streams:
            assert (await stream.response()).status == 200
            assert await read_all(stream) == b"x"
        await asyncio.gather(*calls)
        assert client.idle_connections(origin) == 2
    finally:
        await client.close()
        await agent_side.close(ErrorCode.CANCEL, grace=1)
        await hub_side.close(ErrorCode.CANCEL, grace=1)
    assert client.idle_connections(origin) == 0


async def test_a_stalled_reader_backs_up_into_the_child(child_server, tunnel) -> None:
    """The hub does not read: the agent stops reading the child, whose writes back up,
    instead of buffering the whole body."""
    blob = bytes(range(256)) * 96 * 1024  # 24 MiB: more than loopback's socket buffers
    written = asyncio.Event()

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob))
        writer.write(blob)
        written.set()
        await writer.drain()
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub)
        assert (await stream.response()).status == 200
        await written.wait()
        await asyncio.sleep(0.3)
        backlog = child.writers[0].transport.get_write_buffer_size()
        assert backlog > 8 * 1024 * 1024  # most of it still waits in the child
        got = await read_all(stream)
        assert len(got) == len(blob)
        assert got == blob


def test_request_head_rules() -> None:
    head, chunked = _request_head(
        "PATCH", "/x?y=1", "h:1", [("Host", "evil"), ("Transfer-Encoding", "gzip")], True
    )
    assert chunked
    assert head == b"PATCH /x?y=1 HTTP/1.1\r\nHost: h:1\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_hostile_method_and_path_are_refused(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b""))
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for method, path in (("GET / HTTP/1.1\r\nX:", "/"), ("GET", "/a\r\nX: y")):
            stream = await request(hub, method=method, path=path)
            with pytest.raises(StreamResetError) as reset:
                await stream.response()
            assert reset.value.code is ErrorCode.PROTOCOL_ERROR
    assert child.requests == []


async def test_each_identity_gets_its_own_impersonation(child_server, tunnel) -> None:
    """The executor caches impersonation headers per identity: a second caller must never get
    the first one's, and carried child credentials bypass impersonation every time."""

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b""))
        return True

    bob = UserInfo(name="bob", groups=("ops", "system:masters"), extra={"scopes": ("a", "b")})
    carrier = UserInfo(name="carol", extra={"clusternet-token": ("child-token",)})
    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for user in (ALICE, bob, ALICE, carrier, carrier, bob):
            metadata = {METADATA_KEY: user.to_metadata(), BODY_KEY: False}
            stream = await hub.open_stream(frames.HttpRequestHead("GET", "/", ()), metadata)
            stream.write_eof()
            assert (await stream.response()).status == 200
            await read_all(stream)
    heads = [request.head.decode() for request in child.requests]
    alice, bob_head, alice_again, carol, carol_again, bob_again = heads
    assert alice == alice_again
    assert bob_head == bob_again
    assert "Impersonate-User: alice\r\n" in alice
    assert "Impersonate-Uid: u-1\r\n" in alice
    assert "Impersonate-Group: dev\r\n" in alice
    assert "Impersonate-User: bob\r\n" in bob_head
    assert "Impersonate-Group: ops\r\n" in bob_head
    assert "system:masters" not in bob_head
    assert "Impersonate-Extra-scopes: a\r\nImpersonate-Extra-scopes: b\r\n" in bob_head
    for head in (carol, carol_again):
        assert "Authorization: Bearer child-token\r\n" in head
        assert "Impersonate-" not in head
        assert "agent-token" not in head


async def test_malformed_identity_is_refused_even_after_a_good_one(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b""))
        return True

    good = {"user": "dave", "uid": "", "groups": ["abc"], "extra": {}}
    bad = {"user": "dave", "uid": "", "groups": "abc", "extra": {}}  # a string, not a list
    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for identity, status in ((good, 200), (bad, None)):
            metadata = {METADATA_KEY: identity, BODY_KEY: False}
            stream = await hub.open_stream(frames.HttpRequestHead("GET", "/", ()), metadata)
            stream.write_eof()
            if status is None:
                with pytest.raises(StreamResetError) as reset:
                    await stream.response()
                assert reset.value.code is ErrorCode.PROTOCOL_ERROR
            else:
                assert (await stream.response()).status == status
                await read_all(stream)
    assert len(child.requests) == 1


async def test_an_extra_response_closes_the_connection(child_server, tunnel) -> None:
    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"one") + ok(b"two"))
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for _ in range(2):
            stream = await request(hub)
            assert (await stream.response()).status == 200
            assert await read_all(stream) == b"one"
        assert executor.connections_opened == 2  # never reused after the stray answer


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "head-then-body"])
async def test_response_headers_arrive_in_their_tunnel_form(child_server, tunnel, split) -> None:
    """The headers filtered while parsing are what the long way (``forwardable_response_headers``
    over the raw list) keeps, whether the answer comes in one read or in two."""
    raw = [
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Content-Length", "2"),
        ("Audit-Id", "a-1"),
        ("Proxy-Authenticate", "Basic"),
        ("Trailer", "X-T"),
    ]
    head = "HTTP/1.1 200 OK\r\n" + "".join(f"{n}: {v}\r\n" for n, v in raw) + "\r\n"

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(head.encode())
        if split:
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"{}")
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        for _ in range(2):
            stream = await request(hub)
            got = await stream.response()
            assert got.headers == hop.forwardable_response_headers(raw)
            assert got.headers == (("Content-Type", "application/json"), ("Audit-Id", "a-1"))
            assert got.metadata[CONTENT_LENGTH_KEY] == 2
            assert await read_all(stream) == b"{}"
        assert executor.connections_opened == 1


class RecordingStream:
    """Stands in for the tunnel stream a response goes into; records the calls in order."""

    def __init__(self, reset: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.reset = reset

    def send_headers(
        self, status: int, headers: frames.Headers = (), metadata: object = None
    ) -> None:
        if self.reset:
            raise StreamResetError(ErrorCode.CANCEL, "the hub gave up", remote=True)
        self.calls.append(("headers", status, headers, metadata))

    def write(self, data: bytes) -> None:
        self.calls.append(("data", data))

    def write_eof(self) -> None:
        self.calls.append(("end",))

    def answer(
        self,
        status: int,
        headers: frames.Headers = (),
        metadata: object = None,
        body: Iterable[bytes] = (),
    ) -> None:
        """As TunnelStream.answer: the three calls in one, nothing queued if reset."""
        self.send_headers(status, headers, metadata)
        for chunk in body:
            self.write(chunk)
        self.write_eof()


def connection_for(stream: RecordingStream) -> _Connection:
    conn = _Connection(Origin("127.0.0.1", 1, None, "127.0.0.1:1"), asyncio.get_running_loop())
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    return conn


async def test_a_complete_answer_goes_into_the_stream_from_the_callback() -> None:
    """The whole small answer is in the stream when ``data_received`` returns (no wakeup of
    the request's coroutine needed first), even when its head came in an earlier read."""
    stream = RecordingStream()
    conn = connection_for(stream)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
    assert conn.delivered
    assert conn.keep_alive
    assert stream.calls == [
        ("headers", 200, (("X-A", "b"),), {CONTENT_LENGTH_KEY: 5}),
        ("data", b"hello"),
        ("end",),
    ]
    # The parser is kept for the connection's next answer.
    stream = RecordingStream()
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n")
    assert stream.calls == []  # incomplete: nothing yet
    assert conn.has_head
    assert not conn.delivered
    conn.data_received(b"{}")
    assert conn.delivered
    assert stream.calls == [
        ("headers", 404, (), {CONTENT_LENGTH_KEY: 2}),
        ("data", b"{}"),
        ("end",),
    ]


async def test_a_stream_reset_before_the_answer_is_not_delivered() -> None:
    stream = RecordingStream(reset=True)
    conn = connection_for(stream)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert not conn.delivered
    assert isinstance(conn.failure, StreamResetError)
    assert stream.calls == []


async def test_bytes_after_the_answer_close_the_connection() -> None:
    stream = RecordingStream()
    conn = connection_for(stream)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert conn.delivered
    conn.data_received(b"HTTP/1.1 200 OK\r\n")  # nothing was asked
    assert conn.lost
    assert not conn.reusable


async def test_the_hub_resetting_a_waiting_stream_costs_the_connection(
    child_server, tunnel
) -> None:
    answered = asyncio.Event()
    gate = asyncio.Event()

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        if len(child.requests) == 1:
            await gate.wait()
        writer.write(ok(b"late" if len(child.requests) == 1 else b"next"))
        answered.set()
        return True

    child = await child_server(answer)
    async with executor_for(child) as executor:
        hub = await tunnel(executor)
        stream = await request(hub)
        while not child.requests:
            await asyncio.sleep(0.01)
        stream.reset(ErrorCode.CANCEL, "caller went away")
        await asyncio.sleep(0.05)  # the reset reaches the agent before the answer
        gate.set()
        await answered.wait()
        stream = await request(hub)
        assert (await stream.response()).status == 200
        assert await read_all(stream) == b"next"
        assert executor.connections_opened == 2  # the first answer's connection was closed


async def test_cached_request_heads_follow_token_headers_and_identity(child_server, tunnel) -> None:
    """Request heads are rendered once per caller headers, identity and agent token: a rotated
    token, other caller headers or another caller each get their own head, and the caller's
    own credentials are dropped on the cached path as on the first."""

    async def answer(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b""))
        return True

    tokens = iter(["t-1", "t-1", "t-2", "t-2", "t-2"])
    child = await child_server(answer)
    executor = Executor(
        ChildApiserver(url=f"http://127.0.0.1:{child.port}", token=lambda: next(tokens))
    )
    hostile = (
        ("Accept", "json"),
        ("Authorization", "Bearer stolen"),
        ("Impersonate-User", "root"),
        ("X-Remote-User", "root"),
    )
    bob = UserInfo(name="bob", groups=("ops",))
    asks = [
        (ALICE, hostile),
        (ALICE, hostile),
        (ALICE, hostile),  # token rotated
        (ALICE, (("Accept", "yaml"),)),
        (bob, (("Accept", "yaml"),)),
    ]
    async with executor:
        hub = await tunnel(executor)
        for user, headers in asks:
            metadata = {METADATA_KEY: user.to_metadata(), BODY_KEY: False}
            stream = await hub.open_stream(frames.HttpRequestHead("GET", "/x", headers), metadata)
            stream.write_eof()
            assert (await stream.response()).status == 200
            await read_all(stream)
    first, second, rotated, yaml, for_bob = (r.head.decode() for r in child.requests)
    assert first == second
    for head in (first, second, rotated):
        assert "Accept: json\r\n" in head
        assert "stolen" not in head
        assert "Impersonate-User: root" not in head
        assert "X-Remote-User" not in head
        assert head.count("Impersonate-User: ") == 1
    assert "Authorization: Bearer t-1\r\n" in first
    assert "Authorization: Bearer t-2\r\n" in rotated
    assert "t-1" not in rotated
    assert "Accept: yaml\r\n" in yaml
    assert "Impersonate-User: alice\r\n" in yaml
    assert "Impersonate-User: bob\r\n" in for_bob
    assert "alice" not in for_bob
