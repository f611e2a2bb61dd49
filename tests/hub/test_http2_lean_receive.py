"""A new request's HEADERS frame, taken by the listener's lean receive path, leaves h2's
connection, stream and events exactly as h2's own ``_receive_headers_frame`` does, errors
included (``http2_connection._receive_request``)."""

from __future__ import annotations

import enum
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack
import pytest
from aiohttp import web

from clusternet_aa.apiserver.http2 import Http2Listener
from clusternet_aa.apiserver.http2_connection import Http2Connection, _Headers, _receive_request
from tests.hub.test_http2_fast_path import Recorder

PREFACE = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS, empty
)
BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"hub"), (b":path", b"/")]


async def nothing(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


def server() -> h2.connection.H2Connection:
    """The hub's h2 connection as the listener configures it, past the client's preface and
    a first request (which opens the connection: the lean path serves SERVER_OPEN only)."""
    conn = Http2Connection(Http2Listener(web.Server(nothing))).h2
    conn.initiate_connection()
    block = hpack.Encoder().encode(BASE)
    first = len(block).to_bytes(3, "big") + b"\x01\x05" + (1).to_bytes(4, "big") + block
    conn.receive_data(PREFACE + first)
    assert conn.state_machine.state is h2.connection.ConnectionState.SERVER_OPEN
    return conn


def snapshot(value: Any, depth: int = 0) -> Any:
    """Plain attributes, recursively (h2's streams, state machines, window managers)."""
    if depth < 3 and hasattr(value, "__dict__") and not isinstance(value, (type, enum.Enum)):
        return {
            key: snapshot(item, depth + 1)
            for key, item in vars(value).items()
            if key not in ("config", "_logger")
        }
    return value


def event_view(event: h2.events.Event) -> Any:
    fields = dict(vars(event))
    if isinstance(fields.get("stream_ended"), h2.events.Event):
        fields["stream_ended"] = event_view(fields["stream_ended"])
    return (type(event).__name__, fields)


def both(
    conns: tuple[h2.connection.H2Connection, h2.connection.H2Connection],
    stream_id: int,
    block: bytes,
    end_stream: int,
) -> None:
    """The same frame into each connection, the lean way and h2's; all must agree."""
    lean, reference = conns
    outcome: list[Any] = []
    for conn, lean_path in ((lean, True), (reference, False)):
        try:
            if lean_path:
                events = _receive_request(conn, stream_id, block, end_stream)
            else:
                _, events = conn._receive_headers_frame(
                    _Headers(stream_id, block, end_stream)  # type: ignore[arg-type]
                )
            outcome.append([event_view(e) for e in events])
        except h2.exceptions.ProtocolError as exc:
            outcome.append((type(exc), str(exc)))
    assert outcome[0] == outcome[1]
    assert snapshot(lean.state_machine) == snapshot(reference.state_machine)
    assert lean.streams.keys() == reference.streams.keys()
    for key in lean.streams:
        assert snapshot(lean.streams[key]) == snapshot(reference.streams[key])
    assert lean.highest_inbound_stream_id == reference.highest_inbound_stream_id


CASES: dict[str, tuple[list[tuple[bytes, bytes]], int]] = {
    "GET ended": (BASE, 1),
    "GET open": (BASE, 0),
    "POST with a length": ([(b":method", b"POST"), *BASE[1:], (b"content-length", b"5")], 0),
    "HEAD": ([(b":method", b"HEAD"), *BASE[1:], (b"content-length", b"5")], 1),
    "bad content-length": ([*BASE, (b"content-length", b"5x")], 0),
    "informational :status": ([(b":status", b"101"), *BASE], 0),
    "informational, ended": ([(b":status", b"100"), *BASE], 1),
    "plain :status": ([(b":status", b"200"), *BASE], 1),
    "no headers": ([], 1),
}


@pytest.mark.parametrize("name", list(CASES))
async def test_a_new_request_is_received_as_h2_receives_it(name: str) -> None:
    headers, end_stream = CASES[name]
    conns = (server(), server())
    encoder = hpack.Encoder()
    for stream_id in (3, 5, 7):  # again from a changed HPACK table and beside open streams
        block = encoder.encode(headers)
        both(conns, stream_id, block, end_stream)


async def test_the_stream_limit_and_bad_blocks_fail_as_in_h2() -> None:
    conns = (server(), server())
    for conn in conns:
        conn.local_settings.max_concurrent_streams = 2
        conn.local_settings.acknowledge()
    encoder = hpack.Encoder()
    for stream_id in (3, 5, 7):  # with stream 1 open, the second and third are over the limit
        both(conns, stream_id, encoder.encode(BASE), 0)


@pytest.mark.parametrize(
    "block",
    [
        b"\xff\xff\xff\xff",  # an HPACK index far out of range
        b"\x3f\xe1\x1f",  # a table size update above the allowed size
        b"\x00\x85",  # a literal whose name is cut short
    ],
)
async def test_bad_header_blocks_fail_as_in_h2(block: bytes) -> None:
    both((server(), server()), 3, block, 1)


async def test_the_listener_turns_off_what_the_lean_path_skips() -> None:
    """The lean path leaves out h2's inbound normalisation, validation and decoding: they
    must be off on the listener's connections (headers are checked by http2_headers)."""
    config = server().config
    assert not config.validate_inbound_headers
    assert not config.normalize_inbound_headers
    assert config.header_encoding is None


async def test_a_lone_headers_frame_over_the_frame_size_is_a_goaway() -> None:
    """The lean path takes only frames within our maximum frame size: a larger lone HEADERS
    frame meets the frame scanner, which ends the connection (FRAME_SIZE_ERROR)."""
    hub = Http2Connection(Http2Listener(web.Server(nothing)))
    transport = Recorder()
    hub.connection_made(transport)
    hub.data_received(PREFACE)
    block = hpack.Encoder().encode([*BASE, (b"x-pad", b"p" * 17000)], huffman=False)
    hub.data_received(len(block).to_bytes(3, "big") + b"\x01\x05" + b"\x00\x00\x00\x01" + block)
    assert transport.closing
    assert not hub.streams
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    events = client.receive_data(bytes(transport.out))
    ended = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in ended] == [h2.errors.ErrorCodes.FRAME_SIZE_ERROR]
