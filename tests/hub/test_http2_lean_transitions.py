"""The HTTP/2 listener's leanest paths leave h2 and the wire exactly as h2's own would.

A small response to a request whose stream the client ended applies h2's fixed stream
transitions itself (no ``process_input`` calls); the literal HPACK encoder inlines its length
prefixes. Both are checked here against h2 and hpack doing the same work.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from aiohttp import web
from h2.stream import H2StreamStateMachine, StreamInputs, StreamState

from clusternet_aa.apiserver import http2_stream
from clusternet_aa.apiserver.http2_hpack import LiteralEncoder
from tests.hub.test_http2_fast_path import HubAndClient


def machine_state(machine: H2StreamStateMachine) -> dict[str, Any]:
    return dict(vars(machine))


def reference(stream_id: int, *, request_ended: bool, body: bool) -> dict[str, Any]:
    """h2's stream state machine taken through the inputs of a request and a one-go answer."""
    machine = H2StreamStateMachine(stream_id)
    machine.process_input(StreamInputs.RECV_HEADERS)
    if request_ended:
        machine.process_input(StreamInputs.RECV_END_STREAM)
    machine.process_input(StreamInputs.SEND_HEADERS)
    if body:
        machine.process_input(StreamInputs.SEND_DATA)
    machine.process_input(StreamInputs.SEND_END_STREAM)
    return machine_state(machine)


class Pair(HubAndClient):
    """A hub connection and an h2 client; the hub's h2 stream machines are kept for a look."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler)
        self.events: list[Any] = []
        self.machines: dict[int, H2StreamStateMachine] = {}
        self.pump()

    def pump(self) -> None:
        self.hub.data_received(self.client.data_to_send())
        for stream_id, stream in self.hub.h2.streams.items():
            self.machines.setdefault(stream_id, stream.state_machine)
        data, self.transport.out = bytes(self.transport.out), bytearray()
        self.events += self.client.receive_data(data)

    async def request(self, *, body: bytes | None) -> int:
        stream_id = self.client.get_next_available_stream_id()
        method = b"GET" if body is None else b"POST"
        self.client.send_headers(
            stream_id,
            [
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", b"hub"),
                (b":path", b"/"),
            ],
            end_stream=body is None,
        )
        self.pump()
        for _ in range(20):
            await asyncio.sleep(0)
            self.pump()
        return stream_id


@pytest.mark.parametrize("size", [0, 1, 1024])
async def test_an_ended_request_s_answer_leaves_h2_s_stream_as_h2_would(size: int) -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"b" * size, content_type="text/plain")

    pair = Pair(answer)
    for _ in range(3):
        stream_id = await pair.request(body=None)
        machine = pair.machines[stream_id]
        assert machine.state is StreamState.CLOSED
        assert machine_state(machine) == reference(stream_id, request_ended=True, body=size > 0)
    ended = [e for e in pair.events if isinstance(e, h2.events.StreamEnded)]
    assert len(ended) == 3
    assert not pair.hub.streams
    # The stream is closed on h2's side too: sending on it is h2's error, as after h2's path.
    with pytest.raises(h2.exceptions.StreamClosedError):
        pair.hub.h2.send_data(stream_id, b"x")


async def test_an_answer_before_the_request_ends_takes_h2_s_transitions() -> None:
    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"early", content_type="text/plain")

    pair = Pair(answer)
    stream_id = await pair.request(body=b"")  # headers only; the body never comes
    machine = pair.machines[stream_id]
    # Half-closed (local) by the answer while the client may still send: h2's own
    # transitions, not the fixed ones of an ended request.
    assert machine.state is StreamState.HALF_CLOSED_LOCAL
    assert machine_state(machine) == reference(stream_id, request_ended=False, body=True)
    assert not pair.hub.streams


@pytest.mark.parametrize("size", [0, 1, 126, 127, 128, 255, 300, 5000])
def test_literal_fields_decode_as_encoded_around_the_length_prefix_boundary(size: int) -> None:
    headers = [
        (b":status", b"200"),
        (b"content-type", b"application/json"),
        (b"x-value", b"v" * size),
        (b"n" * size or b"n", b"value"),
        (b"set-cookie", b"c" * size),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    encoder = LiteralEncoder()
    for _ in range(2):  # the second time from the encoder's remembered name prefixes
        block = encoder.encode(headers)
        assert hpack.Decoder().decode(block, raw=True) == headers


@pytest.mark.parametrize(
    "status_line", ["HTTP/2.0 200 OK", "HTTP/2.0 201 Created", "HTTP/2.0 599 X"]
)
def test_a_head_encoded_in_one_pass_is_the_block_h2_s_encoder_makes(status_line: str) -> None:
    fields = [
        ("Content-Type", "application/json"),
        ("Audit-Id", "0a1b2c3d"),
        ("Set-Cookie", "a=b"),  # never indexed
        ("Accept-Encoding", "gzip, deflate"),  # a full static-table entry
        ("Accept-Encoding", "br"),  # a static name with another value
        ("Connection", "keep-alive"),  # dropped, as every connection-specific header
        ("Transfer-Encoding", "chunked"),
        ("X-Long", "v" * 300),
        ("X-Odd", "caf\udce9"),  # a byte aiohttp kept with surrogateescape
        ("content-type", "text/plain"),  # a repeated name in another spelling
    ]
    # What _send_head hands h2 (the general path), encoded by the connection's encoder.
    pairs = [(b":status", status_line.split(" ")[1].encode())]
    for name, value in fields:
        if name.lower() not in http2_stream.CONNECTION_HEADERS:
            pairs.append((name.lower().encode(), value.encode("utf-8", "surrogateescape")))
    for pending_size_update in (True, False, False):
        encoder, reference_encoder = LiteralEncoder(), LiteralEncoder()
        if pending_size_update:
            encoder.header_table_size = reference_encoder.header_table_size = 0
        status = http2_stream._status(status_line)[1]
        block = http2_stream._encode_head(encoder, status, fields)
        assert block == reference_encoder.encode(pairs)
        assert http2_stream._encode_head(encoder, status, fields) == reference_encoder.encode(pairs)
        assert hpack.Decoder().decode(block, raw=True) == pairs


async def test_one_go_answers_go_out_behind_h2_s_output_and_together() -> None:
    """A one-go answer alone on its connection is written at once; behind frames h2 has
    queued (a PING ack from the same read) it follows them in the same write; answers of
    streams ending in the same loop pass share one write."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=b"ok", content_type="text/plain")

    pair = Pair(answer)
    await pair.request(body=None)  # settles the connection's settings exchange
    pair.events.clear()
    writes = pair.transport.writes
    first = await pair.request(body=None)
    assert pair.transport.writes == writes + 1
    # A PING and a request in one read: the ack is queued by h2, the answer follows it.
    pair.client.ping(b"12345678")
    second = pair.client.get_next_available_stream_id()
    pair.client.send_headers(
        second,
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"hub"), (b":path", b"/")],
        end_stream=True,
    )
    # Two requests in one read: both answers in one write.
    third = second + 2
    pair.client.send_headers(
        third,
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"hub"), (b":path", b"/")],
        end_stream=True,
    )
    writes = pair.transport.writes
    pair.hub.data_received(pair.client.data_to_send())
    out = bytearray()
    for _ in range(10):
        await asyncio.sleep(0)
        out += pair.transport.out
        pair.transport.out = bytearray()
    assert pair.transport.writes == writes + 1
    events = pair.client.receive_data(bytes(out))
    kinds = [(type(e).__name__, getattr(e, "stream_id", 0)) for e in events]
    assert kinds[0] == ("PingAckReceived", 0)
    ended = [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]
    assert sorted(ended) == [second, third]
    data = {e.stream_id: e.data for e in events if isinstance(e, h2.events.DataReceived)}
    assert data == {second: b"ok", third: b"ok"}
    assert first not in data
    assert not pair.hub.streams
