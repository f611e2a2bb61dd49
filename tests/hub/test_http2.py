"""HTTP/2 on the hub's listener: ALPN, one connection carrying many streams, per-stream flow
control, resets, bad input, shutdown, and HTTP/1.1 left exactly as it was.

The client here is the ``h2`` library over an asyncio TLS connection, so every frame the hub
sends can be looked at (and a stream can be left unread on purpose).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import trustme
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from clusternet_aa.apiserver.http2 import Http2Listener, Http2Settings
from clusternet_aa.apiserver.tls import offer_alpn
from clusternet_aa.hub.app import Hub
from clusternet_aa.hub.server import HubServer
from tests.hub import certs
from tests.hub.conftest import PKI, HubFactory, echo_routes, flag_settings

ECHO = "/apis/proxies.clusternet.io/v1alpha1/sockets/c1/proxy/direct/api/v1/pods"
TEST_PREFIX = "/apis/proxies.clusternet.io/v1alpha1/sockets/test"
#: The aggregator's identity: front-proxy certificate plus these headers.
FRONT = [("x-remote-user", "alice"), ("x-remote-group", "system:masters")]


@dataclass
class Stream:
    """What the client saw on one stream."""

    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    #: The stream ended on a DATA frame that carried data (not on an empty one after it).
    ended_with_data: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))

    def json(self) -> Any:
        return json.loads(bytes(self.data))


class H2Client:
    """A minimal HTTP/2 client over TLS that records every event per stream.

    Stream credit is returned as data arrives, except for streams in ``stalled``: those get
    connection credit only, as a client that stopped reading one response would.
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, loose: bool = False
    ) -> None:
        self.reader = reader
        self.writer = writer
        # loose: send header blocks exactly as given (malformed ones included), as a hostile
        # or broken client would.
        config = h2.config.H2Configuration(
            client_side=True,
            validate_outbound_headers=not loose,
            normalize_outbound_headers=not loose,
        )
        self.conn = h2.connection.H2Connection(config)
        self.streams: dict[int, Stream] = {}
        self.stalled: set[int] = set()
        #: Streams whose data gets no credit back at all (neither stream nor connection).
        self.held: set[int] = set()
        self.terminated: h2.events.ConnectionTerminated | None = None
        #: Why the reader stopped, when the connection failed rather than closed.
        self.error: Exception | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = asyncio.Event()
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, server: HubServer, client: certs.Pair | None) -> H2Client:
        context = certs.client_context(server.hub.serving.cert_pem, client)
        return await cls.connect(server.port, context)

    @classmethod
    async def connect(cls, port: int, context: ssl.SSLContext, *, loose: bool = False) -> H2Client:
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        self = cls(reader, writer, loose=loose)
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.ensure_future(self._read())
        return self

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._on(event)
                self.flush()
                self.changed.set()
        except (ConnectionError, h2.exceptions.ProtocolError) as exc:
            self.error = exc
        finally:
            self.closed.set()
            self.changed.set()
            for stream in self.streams.values():
                stream.changed.set()

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, setting in event.changed_settings.items():
                self.remote_settings[int(code)] = setting.new_value
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
            return
        stream_id = getattr(event, "stream_id", 0)
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            stream.data += event.data
            stream.ended_with_data = event.stream_ended is not None and bool(event.data)
            if stream_id in self.held:
                pass
            elif stream_id in self.stalled:
                if event.flow_controlled_length:
                    self.conn.increment_flow_control_window(event.flow_controlled_length)
            else:
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = event.error_code
        stream.changed.set()

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.streams[stream_id] = Stream()
        head = [
            (":method", method),
            (":scheme", "https"),
            (":authority", "127.0.0.1"),
            (":path", path),
            *(headers or FRONT),
        ]
        self.conn.send_headers(stream_id, head, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        self.flush()
        return stream_id

    async def wait(
        self, stream_id: int, predicate: Callable[[Stream], bool], timeout: float = 10
    ) -> Stream:
        stream = self.streams[stream_id]

        async def until() -> None:
            while not predicate(stream):
                if self.closed.is_set():
                    raise ConnectionError("the connection closed")
                stream.changed.clear()
                await stream.changed.wait()

        await asyncio.wait_for(until(), timeout)
        return stream

    async def response(self, stream_id: int, timeout: float = 10) -> Stream:
        return await self.wait(stream_id, lambda s: s.ended or s.reset is not None, timeout)

    async def get(self, path: str, **kwargs: Any) -> Stream:
        return await self.response(self.request(path, **kwargs))

    def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)


@dataclass
class Probe:
    """What the test routes saw: started, cancelled and finished handlers, bytes written."""

    started: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    written: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


def probe_routes(probe: Probe) -> Callable[[web.Application, Hub], None]:
    """Echo routes plus handlers that hang, stream forever, or read a body."""

    def add(app: web.Application, hub: Hub) -> None:
        async def hang(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"started\n")
            probe.started.add(name)
            probe.note()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                probe.cancelled.add(name)
                probe.note()
                raise
            return response

        async def endless(request: web.Request) -> web.StreamResponse:
            name = request.match_info["name"]
            response = web.StreamResponse()
            await response.prepare(request)
            probe.written[name] = 0
            chunk = b"x" * 16384
            while True:
                probe.blocked.add(name)
                probe.note()
                await response.write(chunk)
                probe.blocked.discard(name)
                probe.written[name] += len(chunk)
                probe.note()

        async def sized(request: web.Request) -> web.StreamResponse:
            """Content-Length 10, written in two chunks, then 5 bytes too many."""
            response = web.StreamResponse()
            response.content_length = 10
            await response.prepare(request)
            await response.write(b"01234")
            await response.write(b"56789")
            await response.write(b"extra")
            await response.write_eof()
            return response

        async def upload(request: web.Request) -> web.Response:
            total = 0
            async for chunk in request.content.iter_chunked(10000):
                total += len(chunk)
            return web.json_response({"received": total})

        app.router.add_get(TEST_PREFIX + "/hang/{name}", hang)
        app.router.add_get(TEST_PREFIX + "/endless/{name}", endless)
        app.router.add_post(TEST_PREFIX + "/upload", upload)
        app.router.add_get(TEST_PREFIX + "/sized", sized)
        echo_routes(app, hub)

    return add


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def h2hub(pki: PKI, parent_kubeconfig: Path, probe: Probe) -> AsyncIterator[HubServer]:
    server = HubServer(flag_settings(pki, parent_kubeconfig), extra_routes=probe_routes(probe))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client(h2hub: HubServer, pki: PKI) -> AsyncIterator[H2Client]:
    c = await H2Client.open(h2hub, pki.front_client)
    yield c
    await c.close()


def tls_context(server: HubServer, pki: PKI, alpn: list[str]) -> ssl.SSLContext:
    context = certs.client_context(server.hub.serving.cert_pem, pki.front_client)
    context.set_alpn_protocols(alpn)
    return context


async def test_h2_request_goes_through_authentication_and_routing(
    h2hub: HubServer, client: H2Client
) -> None:
    reply = await client.get(ECHO)
    assert reply.status == 200
    body = reply.json()
    # The front-proxy identity was taken from the TLS connection's certificate + headers.
    assert body["user"]["user"] == "alice"
    assert "system:masters" in body["user"]["groups"]
    assert dict(body["headers"])["Host"] == "127.0.0.1"
    assert h2hub.listener.h2_connections_total == 1
    assert h2hub.listener.h2_streams_total == 1
    # Connection-specific headers never go out on HTTP/2.
    assert "transfer-encoding" not in reply.headers
    assert "connection" not in reply.headers
    assert client.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 1000


async def test_without_the_front_proxy_certificate_the_headers_are_not_trusted(
    h2hub: HubServer,
) -> None:
    anonymous = await H2Client.open(h2hub, None)
    try:
        reply = await anonymous.get(ECHO)
        assert reply.status == 401
        assert reply.json()["kind"] == "Status"
    finally:
        await anonymous.close()


async def test_many_concurrent_streams_on_one_connection(
    h2hub: HubServer, client: H2Client, probe: Probe
) -> None:
    ids = [client.request(f"{TEST_PREFIX}/hang/w{i}") for i in range(300)]
    await probe.until(lambda: len(probe.started) == 300)
    for stream_id in ids:
        stream = await client.wait(stream_id, lambda s: s.data == b"started\n")
        assert stream.status == 200
    assert h2hub.listener.active_streams == 300
    assert h2hub.listener.h2_connections_total == 1
    # Short requests still pass between them.
    assert (await client.get(ECHO)).status == 200


async def test_rst_stream_cancels_that_handler_only(
    h2hub: HubServer, client: H2Client, probe: Probe
) -> None:
    ids = {name: client.request(f"{TEST_PREFIX}/hang/{name}") for name in ("a", "b", "c")}
    await probe.until(lambda: probe.started == {"a", "b", "c"})
    client.reset(ids["b"])
    await probe.until(lambda: "b" in probe.cancelled)
    await asyncio.sleep(0.1)
    assert probe.cancelled == {"b"}
    assert h2hub.listener.active_streams == 2
    assert (await client.get(ECHO)).status == 200


async def test_a_stalled_stream_holds_at_most_its_window(
    h2hub: HubServer, client: H2Client, probe: Probe
) -> None:
    stalled = client.request(f"{TEST_PREFIX}/endless/slow")
    client.stalled.add(stalled)
    window = 65535  # the client's initial stream window (h2's default)
    # The handler writes until the stream's window is spent, then waits in write().
    await probe.until(lambda: "slow" in probe.blocked and probe.written.get("slow", -1) >= 0)
    await client.wait(stalled, lambda s: len(s.data) >= window - 16384)
    await asyncio.sleep(0.3)
    written = probe.written["slow"]
    assert "slow" in probe.blocked
    assert written <= window
    assert len(client.streams[stalled].data) <= window
    # Nothing piles up in the connection's write buffer, and other streams still flow.
    flowing = client.request(f"{TEST_PREFIX}/endless/fast")
    await client.wait(flowing, lambda s: len(s.data) >= 2 * 1024 * 1024)
    transport_buffer = sum(
        c.transport.get_write_buffer_size()
        for c in h2hub.listener.connections
        if c.transport is not None
    )
    assert transport_buffer <= 256 * 1024
    assert probe.written["slow"] == written
    client.reset(flowing)
    client.reset(stalled)


async def test_writers_waiting_for_connection_credit_resume_when_it_comes(
    client: H2Client, probe: Probe
) -> None:
    """Stream windows wide open, the connection's spent: the writer waits, and the
    connection's WINDOW_UPDATE (not one for its stream) wakes it."""
    client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 24})
    client.flush()
    stream_id = client.request(f"{TEST_PREFIX}/endless/held")
    client.held.add(stream_id)
    window = 65535  # the connection's window (h2's default for the client)
    await client.wait(stream_id, lambda s: len(s.data) >= window - 16384)
    await asyncio.sleep(0.3)
    assert "held" in probe.blocked
    assert len(client.streams[stream_id].data) <= window
    before = probe.written["held"]
    client.conn.increment_flow_control_window(1 << 20)  # stream 0 only
    client.flush()
    await client.wait(stream_id, lambda s: len(s.data) >= (1 << 20) // 2)
    await probe.until(lambda: probe.written["held"] > before)
    client.reset(stream_id)


async def test_request_bodies_larger_than_the_window_flow(client: H2Client) -> None:
    body = b"y" * (1024 * 1024 + 17)  # four stream windows
    stream_id = client.request(f"{TEST_PREFIX}/upload", method="POST", body=None, end=False)
    sent = 0
    while sent < len(body):
        window = client.conn.local_flow_control_window(stream_id)
        if window == 0:
            client.changed.clear()
            await asyncio.wait_for(client.changed.wait(), 10)
            continue
        size = min(window, client.conn.max_outbound_frame_size, len(body) - sent)
        client.conn.send_data(stream_id, body[sent : sent + size])
        sent += size
        client.flush()
    client.conn.end_stream(stream_id)
    client.flush()
    reply = await client.response(stream_id)
    assert reply.status == 200
    assert reply.json() == {"received": len(body)}


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        # A frame header announcing 16 MiB: refused at the header, not after buffering it.
        (b"\xff" * 64, h2.errors.ErrorCodes.FRAME_SIZE_ERROR),
        # DATA on stream 0.
        (b"\x00\x00\x03\x00\x00\x00\x00\x00\x00abc", h2.errors.ErrorCodes.PROTOCOL_ERROR),
    ],
)
async def test_garbage_after_the_preface_is_a_goaway_and_the_hub_serves_on(
    h2hub: HubServer, client: H2Client, pki: PKI, garbage: bytes, code: int
) -> None:
    assert (await client.get(ECHO)).status == 200
    client.writer.write(garbage)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.terminated is not None
    assert client.terminated.error_code == code
    for _ in range(100):
        if not h2hub.listener.connections:
            break
        await asyncio.sleep(0.02)
    assert not h2hub.listener.connections
    other = await H2Client.open(h2hub, pki.front_client)
    try:
        assert (await other.get(ECHO)).status == 200
    finally:
        await other.close()


async def test_oversize_headers_are_a_goaway_and_the_hub_serves_on(
    h2hub: HubServer, client: H2Client, pki: PKI
) -> None:
    huge = [(f"x-big-{i}", "v" * 8000) for i in range(12)]  # about 96 KiB > 64 KiB
    client.request(ECHO, headers=[*FRONT, *huge])
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.terminated is not None
    assert client.terminated.error_code != h2.errors.ErrorCodes.NO_ERROR
    other = await H2Client.open(h2hub, pki.front_client)
    try:
        assert (await other.get(ECHO)).status == 200
    finally:
        await other.close()


def _head(path: str = ECHO) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "https"), (":authority", "127.0.0.1"), (":path", path)]


def _without(name: str) -> list[tuple[str, str]]:
    return [h for h in _head() if h[0] != name] + FRONT


#: Header blocks RFC 9113 calls malformed, each a way to make the hub and what is behind it
#: read one request differently (or to smuggle a second one).
MALFORMED: dict[str, list[tuple[str, str]]] = {
    "upper-case name": [*_head(), *FRONT, ("X-Remote-User", "root")],
    "colon in a name": [*_head(), *FRONT, ("x-a:b", "1")],
    "space in a name": [*_head(), *FRONT, ("x-a b", "1")],
    "empty name": [*_head(), *FRONT, ("", "1")],
    "CR LF in a value": [*_head(), *FRONT, ("x-a", "1\r\nx-remote-user: root")],
    "LF in a value": [*_head(), *FRONT, ("x-a", "1\nhost: evil")],
    "NUL in a value": [*_head(), *FRONT, ("x-a", "1\x002")],
    "value with a leading space": [*_head(), *FRONT, ("x-a", " 1")],
    "value with a trailing tab": [*_head(), *FRONT, ("x-a", "1\t")],
    "connection": [*_head(), *FRONT, ("connection", "close")],
    "keep-alive": [*_head(), *FRONT, ("keep-alive", "timeout=5")],
    "proxy-connection": [*_head(), *FRONT, ("proxy-connection", "keep-alive")],
    "transfer-encoding": [*_head(), *FRONT, ("transfer-encoding", "chunked")],
    "upgrade": [*_head(), *FRONT, ("upgrade", "websocket")],
    "te other than trailers": [*_head(), *FRONT, ("te", "gzip")],
    "pseudo-header after a field": [*_head()[:3], *FRONT, (":path", ECHO)],
    "repeated :path": [*_head(), (":path", "/ping"), *FRONT],
    "repeated :method": [*_head(), (":method", "DELETE"), *FRONT],
    "unknown pseudo-header": [*_head(), (":foo", "bar"), *FRONT],
    ":status in a request": [*_head(), (":status", "200"), *FRONT],
    "no :method": _without(":method"),
    "no :scheme": _without(":scheme"),
    "no :path": _without(":path"),
    "empty :path": [*_head()[:3], (":path", ""), *FRONT],
    "space in :path": [*_head(ECHO + " HTTP/1.1\r\nx: y"), *FRONT],
    "space in :method": [(":method", "GET /ping"), *_head()[1:], *FRONT],
    "no :authority nor host": _without(":authority"),
    ":authority and host differ": [*_head(), *FRONT, ("host", "evil.example")],
    "two host fields": [*_without(":authority"), ("host", "127.0.0.1"), ("host", "evil")],
    ":protocol without CONNECT": [*_head(), (":protocol", "websocket"), *FRONT],
    "CONNECT with :path": [(":method", "CONNECT"), *_head()[1:], *FRONT],
    "content-length without a body": [*_head(), *FRONT, ("content-length", "5")],
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_header_blocks_reset_their_stream_only(
    h2hub: HubServer, pki: PKI, case: str
) -> None:
    """Each is refused before the application sees it (RST_STREAM PROTOCOL_ERROR, no
    response head), and the connection serves its next request: a stream error, so one bad
    request cannot end the other watches an aggregator multiplexes on it."""
    context = certs.client_context(h2hub.hub.serving.cert_pem, pki.front_client)
    c = await H2Client.connect(h2hub.port, context, loose=True)
    try:
        stream_id = c.conn.get_next_available_stream_id()
        c.streams[stream_id] = Stream()
        c.conn.send_headers(
            stream_id, [(k.encode(), v.encode()) for k, v in MALFORMED[case]], end_stream=True
        )
        c.flush()
        reply = await c.response(stream_id)
        assert reply.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR, case
        assert reply.headers == {}
        assert not reply.data
        assert (await c.get(ECHO)).status == 200
        assert c.terminated is None
    finally:
        await c.close()


@pytest.mark.parametrize(("announced", "sent"), [(10, b"12345"), (3, b"12345"), (0, b"1")])
async def test_content_length_against_data_is_enforced(
    h2hub: HubServer, client: H2Client, announced: int, sent: bytes
) -> None:
    """A body longer or shorter than its content-length never reaches a handler: h2 checks
    it (whatever the header validation options) and ends the connection."""
    stream_id = client.request(
        TEST_PREFIX + "/upload",
        method="POST",
        headers=[*FRONT, ("content-length", str(announced))],
        body=sent,
    )
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.terminated is not None
    assert client.terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert not client.streams[stream_id].data


async def test_well_formed_edge_cases_are_served(client: H2Client) -> None:
    """What the checks must let through: te: trailers, spaces inside a value, an empty
    value, split cookies (joined again), a host equal to :authority."""
    reply = await client.get(
        ECHO,
        headers=[
            *FRONT,
            ("te", "trailers"),
            ("x-note", "a  b"),
            ("x-empty", ""),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("host", "127.0.0.1"),
        ],
    )
    assert reply.status == 200
    seen = {k.lower(): v for k, v in reply.json()["headers"]}
    assert seen["x-note"] == "a  b"
    assert seen["x-empty"] == ""
    assert seen["cookie"] == "a=1; b=2"
    assert seen["te"] == "trailers"
    assert seen["host"] == "127.0.0.1"


async def test_the_chunk_completing_content_length_ends_the_stream(client: H2Client) -> None:
    """No empty DATA frame after the body; bytes past the declared length are dropped (as
    aiohttp's HTTP/1.1 writer drops them); the connection goes on."""
    reply = await client.get(TEST_PREFIX + "/sized")
    assert reply.status == 200
    assert reply.headers["content-length"] == "10"
    assert bytes(reply.data) == b"0123456789"
    assert reply.ended
    assert reply.ended_with_data
    assert (await client.get(ECHO)).status == 200


async def test_connect_and_upgrades_on_h2_get_a_status(client: H2Client) -> None:
    stream_id = client.conn.get_next_available_stream_id()
    client.streams[stream_id] = Stream()
    client.conn.send_headers(
        stream_id, [(":method", "CONNECT"), (":authority", "127.0.0.1:1"), *FRONT]
    )
    client.flush()
    reply = await client.response(stream_id)
    assert reply.status == 405
    status = reply.json()
    assert status["kind"] == "Status"
    assert "HTTP/1.1" in status["message"]
    # The connection is fine afterwards.
    assert (await client.get(ECHO)).status == 200


async def test_http11_clients_are_unaffected(h2hub: HubServer, pki: PKI) -> None:
    # Clients offering http/1.1 by ALPN, and clients offering no ALPN at all (aiohttp's
    # default, old clients), get aiohttp's HTTP/1.1 server as before.
    for alpn in (["http/1.1"], []):
        connector = aiohttp.TCPConnector(ssl=tls_context(h2hub, pki, alpn))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(h2hub.url + ECHO, headers=FRONT) as response,
        ):
            assert response.status == 200
            assert response.version == aiohttp.HttpVersion11
            assert (await response.json())["user"]["user"] == "alice"
    assert h2hub.listener.http11_connections_total == 2
    assert h2hub.listener.h2_connections_total == 0


async def test_alpn_prefers_h2_and_the_flag_turns_it_off(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    on = await start_hub(flag_settings(pki, parent_kubeconfig))
    off = await start_hub(replace(flag_settings(pki, parent_kubeconfig), http2=False))
    for server, expected in ((on, "h2"), (off, "http/1.1")):
        context = tls_context(server, pki, ["h2", "http/1.1"])
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == expected
        writer.close()
    # Offering only h2 to the HTTP/1.1-only hub negotiates nothing (then it is HTTP/1.1).
    context = tls_context(off, pki, ["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", off.port, ssl=context)
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() is None
    writer.close()
    assert off.listener.h2_connections_total == 0


async def test_shutdown_sends_goaway_lets_streams_finish_then_cancels(
    pki: PKI, parent_kubeconfig: Path, probe: Probe
) -> None:
    server = HubServer(flag_settings(pki, parent_kubeconfig), extra_routes=probe_routes(probe))
    await server.start()
    c = await H2Client.open(server, pki.front_client)
    try:
        c.request(f"{TEST_PREFIX}/hang/long")
        await probe.until(lambda: "long" in probe.started)
        stopping = asyncio.ensure_future(server.stop())
        await asyncio.wait_for(c.changed.wait(), 5)
        for _ in range(50):
            if c.terminated is not None:
                break
            c.changed.clear()
            await asyncio.wait_for(c.changed.wait(), 5)
        assert c.terminated is not None
        assert c.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert "long" not in probe.cancelled  # in flight: it gets the grace period
        await asyncio.wait_for(stopping, 10)
        assert "long" in probe.cancelled  # after the grace (1 s in these settings)
        await asyncio.wait_for(c.closed.wait(), 5)
    finally:
        await c.close()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], True), (["--http2"], True), (["--http2=false"], False), (["--http2", "true"], True)],
)
def test_the_http2_flag(argv: list[str], expected: bool) -> None:
    from clusternet_aa.cli import hub as cli

    args = cli.build_parser().parse_args(["--secure-port", "0", *argv])
    assert cli.settings_from_args(args).http2 is expected


@pytest.fixture
async def bare() -> AsyncIterator[tuple[int, ssl.SSLContext, Http2Listener]]:
    """A listener with small limits in front of a three-route application."""

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.8)
        return web.Response(text="done")

    async def hold(_: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never reads the body
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_get("/slow", slow)
    app.router.add_post("/hold", hold)
    runner = web.AppRunner(app)
    await runner.setup()
    assert runner.server is not None
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    offer_alpn(server_ssl, http2=True)
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)
    listener = Http2Listener(
        runner.server,
        settings=Http2Settings(
            idle_timeout=0.3,
            stream_window=64 * 1024,
            connection_window=128 * 1024,
            max_buffered=128 * 1024,
        ),
    )
    server = await asyncio.get_running_loop().create_server(
        listener, "127.0.0.1", 0, ssl=server_ssl
    )
    try:
        yield server.sockets[0].getsockname()[1], client_ssl, listener
    finally:
        server.close()
        await asyncio.gather(listener.shutdown(1), runner.cleanup())


async def goes_away_cleanly(c: H2Client) -> None:
    """Wait until the hub closes ``c``'s connection, which it must do with GOAWAY NO_ERROR."""
    await asyncio.wait_for(c.closed.wait(), 5)
    terminated = c.terminated
    assert terminated is not None
    assert terminated.error_code == h2.errors.ErrorCodes.NO_ERROR


async def test_idle_connections_get_goaway_after_the_idle_timeout(
    bare: tuple[int, ssl.SSLContext, Http2Listener],
) -> None:
    port, context, _ = bare
    c = await H2Client.connect(port, context)
    try:
        reply = await c.get("/ping", headers=[])
        assert bytes(reply.data) == b"pong"
        # A request in flight keeps it open past the timeout...
        slow = await c.get("/slow", headers=[])
        assert bytes(slow.data) == b"done"
        assert c.terminated is None
        # ...then, idle, it is closed with GOAWAY NO_ERROR.
        await goes_away_cleanly(c)
    finally:
        await c.close()


async def test_the_idle_timeout_counts_from_the_last_stream_only(
    bare: tuple[int, ssl.SSLContext, Http2Listener],
) -> None:
    """Requests 0.15 s apart for longer than the 0.3 s timeout keep the connection open (the
    timer armed before them must not close it when it fires); idle after them, it closes."""
    port, context, _ = bare
    c = await H2Client.connect(port, context)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answered = started
        while answered - started < 1.0:
            reply = await c.get("/ping", headers=[])
            answered = loop.time()
            assert bytes(reply.data) == b"pong"
            await asyncio.sleep(0.15)
            assert c.terminated is None
            assert not c.closed.is_set()
        await goes_away_cleanly(c)
        # The timeout counts from the last answer (the hub ended that stream just before).
        assert loop.time() - answered >= 0.25
    finally:
        await c.close()


async def test_a_connection_sending_only_malformed_requests_still_idles_out(
    bare: tuple[int, ssl.SSLContext, Http2Listener],
) -> None:
    """Each malformed request is reset at once and is no activity: the idle timeout closes
    the connection as if nothing had been sent."""
    port, context, _ = bare
    c = await H2Client.connect(port, context, loose=True)
    try:
        for _ in range(3):
            stream = await c.get("/ping", headers=[("Upper-Case", "x")])
            assert stream.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR
        await goes_away_cleanly(c)
    finally:
        await c.close()


async def test_random_bytes_never_escape_into_the_loop(
    bare: tuple[int, ssl.SSLContext, Http2Listener], caplog: pytest.LogCaptureFixture
) -> None:
    """Seeded random frames and bytes after the preface: each connection ends (GOAWAY or
    close) or carries on, nothing reaches the loop's exception handler, and the listener
    keeps serving."""
    port, context, _ = bare
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, ctx: errors.append(ctx))
    rng = random.Random(8)
    try:
        for _ in range(40):
            c = await H2Client.connect(port, context)
            try:
                frame_type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, rng.randrange(256)])
                length = rng.choice([0, 1, 5, 8, 100, rng.randrange(17000)])
                stream = rng.choice([0, 1, 2, 3, rng.randrange(2**31)])
                flags = rng.randrange(256)
                payload = rng.randbytes(length)
                header = length.to_bytes(3, "big") + bytes([frame_type, flags])
                c.writer.write(header + stream.to_bytes(4, "big") + payload)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(c.closed.wait(), 0.2)
            finally:
                await c.close()
        ok = await H2Client.connect(port, context)
        try:
            assert bytes((await ok.get("/ping", headers=[])).data) == b"pong"
        finally:
            await ok.close()
    finally:
        loop.set_exception_handler(None)
    assert errors == []
    # Every fault was a protocol error h2 answered, none an unexpected exception of ours.
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_the_hub_process_on_uvloop_serves_both_protocols(
    pki: PKI, parent_kubeconfig: Path, tmp_path: Path
) -> None:
    """``clusternet-hub`` runs on uvloop, whose TLS transport is where the protocol is swapped
    after the handshake: HTTP/2 and HTTP/1.1 both served, GOAWAY on SIGTERM, exit 0."""
    from tests.hub.test_cli import SCRIPT, _read_url

    serving = certs.make_ca("serving-ca")
    cert_file, key_file = certs.issue(serving, "hub", usage=None, sans=("localhost",)).write(
        tmp_path, "serving"
    )
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT), "--bind-address=127.0.0.1", "--secure-port=0",
        f"--tls-cert-file={cert_file}", f"--tls-private-key-file={key_file}",
        f"--kubeconfig={parent_kubeconfig}",
        f"--requestheader-client-ca-file={pki.file(pki.front_ca, 'front-ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        url, _ = await _read_url(process.stderr)
        port = int(url.rsplit(":", 1)[1])
        context = certs.client_context(serving.cert_pem, pki.front_client)
        context.check_hostname = False
        c = await H2Client.connect(port, context)
        try:
            replies = await asyncio.gather(*(c.get("/version", headers=[]) for _ in range(20)))
            assert {r.status for r in replies} == {200}
            assert "gitVersion" in replies[0].json()
            connector = aiohttp.TCPConnector(ssl=tls_context_for(serving.cert_pem, pki))
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(f"https://127.0.0.1:{port}/version") as response,
            ):
                assert response.status == 200
                assert response.version == aiohttp.HttpVersion11
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(c.closed.wait(), 10)
            assert c.terminated is not None
            assert c.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        finally:
            await c.close()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def tls_context_for(serving_ca_pem: bytes, pki: PKI) -> ssl.SSLContext:
    context = certs.client_context(serving_ca_pem, pki.front_client)
    context.check_hostname = False
    context.set_alpn_protocols(["http/1.1"])
    return context


async def test_unread_request_bodies_are_bounded_per_connection(
    bare: tuple[int, ssl.SSLContext, Http2Listener],
) -> None:
    """Eight uploads to handlers that never read: each stream stops at its window, and the
    connection stops at ``max_buffered`` (+ the connection window in flight), not at eight
    windows. Resetting the streams releases the accounting."""
    port, context, listener = bare
    c = await H2Client.connect(port, context)
    try:
        ids = [c.request("/hold", method="POST", headers=[], end=False) for _ in range(8)]
        sent = 0
        idle_rounds = 0
        while idle_rounds < 5:
            progressed = False
            for stream_id in ids:
                window = c.conn.local_flow_control_window(stream_id)
                size = min(window, c.conn.max_outbound_frame_size)
                if size > 0:
                    c.conn.send_data(stream_id, b"z" * size)
                    sent += size
                    progressed = True
            c.flush()
            idle_rounds = 0 if progressed else idle_rounds + 1
            await asyncio.sleep(0.05)
        bound = 128 * 1024 + 128 * 1024 + 32 * 1024  # max_buffered + window + one batch
        assert 128 * 1024 < sent <= bound
        assert sent < 8 * 64 * 1024
        (connection,) = listener.connections
        assert connection.buffered == sent
        for stream_id in ids:
            c.reset(stream_id)
        for _ in range(100):
            if connection.buffered == 0:
                break
            await asyncio.sleep(0.02)
        assert connection.buffered == 0
        assert (await c.get("/ping", headers=[])).status == 200
    finally:
        await c.close()


async def test_rapid_reset_is_bounded_by_the_handlers_still_running(
    h2hub: HubServer, client: H2Client, probe: Probe, pki: PKI
) -> None:
    """The "rapid reset" attack (CVE-2023-44487): open a stream and reset it at once, in a
    loop, so that the client's concurrency limit never binds while the server keeps starting
    handlers. A stream's place is freed only when its handler has ended, so at most
    max_concurrent_streams handlers run at any time, the rest are refused, and the hub keeps
    serving others."""
    limit = Http2Settings().max_concurrent_streams
    peak = 0
    for burst in range(6):
        for i in range(500):
            stream_id = client.request(f"{TEST_PREFIX}/hang/r{burst}-{i}")
            client.reset(stream_id)
        # Sample at every loop pass while the hub works through the burst (the handlers it
        # starts are cancelled within a few passes; how the burst's bytes arrive over those
        # passes depends on the machine's load): the bound must hold at every sample.
        for _ in range(50):
            await asyncio.sleep(0)
            active = h2hub.listener.active_streams
            assert active <= limit
            peak = max(peak, active)
    other = await H2Client.open(h2hub, pki.front_client)
    try:
        assert (await other.response(other.request(ECHO), timeout=10)).status == 200
    finally:
        await other.close()

    async def all_ended() -> None:
        while h2hub.listener.active_streams:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(all_ended(), 10)  # every reset handler was cancelled and ended
    assert client.terminated is None, client.terminated  # a reset is legal: the connection lives on
    assert not client.closed.is_set(), client.error
    assert 0 < peak <= limit


async def test_the_listener_counts_are_metrics(h2hub: HubServer, client: H2Client) -> None:
    ids = [client.request(f"{TEST_PREFIX}/hang/m{i}") for i in range(3)]
    await client.wait(ids[-1], lambda s: bool(s.data))
    reply = await client.get("/metrics")
    assert reply.status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.data.decode())
        for s in family.samples
    }
    assert samples[("clusternet_hub_connections_accepted_total", (("protocol", "h2"),))] >= 1
    assert ("clusternet_hub_connections_accepted_total", (("protocol", "http/1.1"),)) in samples
    assert samples[("clusternet_hub_http2_connections", ())] >= 1
    # The three hanging watches and the /metrics request itself.
    assert samples[("clusternet_hub_http2_streams", ())] == 4
    assert samples[("clusternet_hub_http2_streams_served_total", ())] >= 4
