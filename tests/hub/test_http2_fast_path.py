"""The HTTP/2 listener's per-request shortcuts must not change what goes over the wire.

* ``CachingDecoder``: the same headers, and the same errors, as hpack's decoder, block after
  block, while the dynamic table and the limits change under repeated bytes.
* ``cached_request_message``: the same head, and the same ``MalformedRequest``, as
  ``request_message``, whether the list was seen before or not.
* ``Http2Stream._finish`` (a response's head and body in one go): a stock h2 client, fed the
  hub's bytes, sees the same responses as over the general path, including heads larger than
  a frame (CONTINUATION) and bodies larger than a window (the general path then), and h2's
  state stays right for the requests that follow.

Sans-IO towards the client: the client is an ``H2Connection`` whose bytes go straight into
the hub's ``Http2Connection`` over a recording transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import pytest
from aiohttp import web
from aiohttp.http import RawRequestMessage
from h2.settings import SettingCodes
from hpack.exceptions import OversizedHeaderListError
from hyperframe.frame import Frame, GoAwayFrame

from clusternet_aa.apiserver.http2 import Http2Listener
from clusternet_aa.apiserver.http2_connection import Http2Connection
from clusternet_aa.apiserver.http2_headers import (
    MalformedRequest,
    cached_request_message,
    request_message,
)
from clusternet_aa.apiserver.http2_hpack import CachingDecoder

# --- CachingDecoder ----------------------------------------------------------------------------


def test_repeated_blocks_decode_as_hpack_does_while_the_table_changes() -> None:
    """The same bytes mean different headers once the table changed; the cache must follow."""
    encoder = hpack.Encoder()
    stock, cached = hpack.Decoder(), CachingDecoder()
    blocks = []
    # Each new name is indexed (enters the table): the block for "x-a" alone is one indexed
    # byte the second time, and that byte's meaning shifts as later entries push it down.
    for round_no in range(6):
        for name in (b"x-a", b"x-b", b"x-a"):
            blocks.append(encoder.encode([(name, b"v%d" % round_no)]))
            blocks.append(encoder.encode([(name, b"v%d" % round_no)]))  # now all indexed
    indexed = bytes((0x80 | 62,))  # "the newest dynamic entry", whatever it is now
    for block in blocks:
        for data in (block, indexed, block):
            assert cached.decode(data, raw=True) == stock.decode(data, raw=True)
    assert cached._blocks, "repeated all-indexed blocks are kept"


def test_a_table_size_update_invalidates_cached_blocks() -> None:
    encoder = hpack.Encoder()
    stock, cached = hpack.Decoder(), CachingDecoder()
    first = encoder.encode([(b"x-a", b"1")])
    for decoder in (stock, cached):
        decoder.decode(first, raw=True)
    indexed = bytes((0x80 | 62,))
    assert cached.decode(indexed, raw=True) == stock.decode(indexed, raw=True)
    # The peer shrinks the table to 0 (evicting x-a) and decodes the same byte again: an error
    # for both, not the remembered header.
    for decoder in (stock, cached):
        decoder.decode(b"\x20", raw=True)
        with pytest.raises(hpack.HPACKError):
            decoder.decode(indexed, raw=True)


def test_a_lowered_header_list_limit_applies_to_cached_blocks() -> None:
    encoder = hpack.Encoder()
    cached = CachingDecoder()
    block = encoder.encode([(b"x-long", b"y" * 500)])
    cached.decode(block, raw=True)
    again = encoder.encode([(b"x-long", b"y" * 500)])  # indexed now
    assert cached.decode(again, raw=True) == [(b"x-long", b"y" * 500)]
    cached.max_header_list_size = 100
    with pytest.raises(OversizedHeaderListError):
        cached.decode(again, raw=True)


def test_each_decoding_returns_its_own_list() -> None:
    encoder = hpack.Encoder()
    cached = CachingDecoder()
    cached.decode(encoder.encode([(b"x-a", b"1")]), raw=True)
    block = encoder.encode([(b"x-a", b"1")])
    first = cached.decode(block, raw=True)
    assert isinstance(first, list)
    first.clear()
    assert cached.decode(block, raw=True) == [(b"x-a", b"1")]


# --- cached_request_message ----------------------------------------------------------------------

HEAD = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"hub"),
    (b":path", b"/api/v1/pods?limit=1"),
    (b"accept", b"application/json"),
]


def test_a_repeated_list_gives_the_same_head_as_building_it() -> None:
    built, problem = request_message(HEAD, ended=True)
    assert problem is None
    assert built is not None
    for _ in range(2):
        message, problem = cached_request_message(list(HEAD), ended=True)
        assert problem is None
        assert message is not None
        assert same(message) == same(built)


def same(message: RawRequestMessage) -> tuple[Any, ...]:
    """A head's fields, its headers as a list (the proxies compare by identity)."""
    return (
        message.method,
        message.path,
        message.version,
        list(message.headers.items()),
        message.raw_headers,
        message.should_close,
        message.compression,
        message.upgrade,
        message.chunked,
        message.url,
    )


@pytest.mark.parametrize(
    "extra",
    [
        [(b"connection", b"close")],
        [(b"Accept", b"x")],
        [(b"x-bad", b"a\r\nb")],
        [(b":path", b"/again")],
    ],
)
def test_malformed_lists_stay_malformed_when_repeated(extra: list[tuple[bytes, bytes]]) -> None:
    for _ in range(3):
        with pytest.raises(MalformedRequest):
            cached_request_message(HEAD + extra, ended=True)


def test_content_length_without_a_body_is_malformed_even_after_the_same_list_with_one() -> None:
    head = [*HEAD, (b"content-length", b"5")]
    message, problem = cached_request_message(head, ended=False)
    assert message is not None
    assert problem is None
    with pytest.raises(MalformedRequest):
        cached_request_message(head, ended=True)


def test_an_upgrade_is_answered_every_time() -> None:
    head = [(b":method", b"CONNECT"), (b":authority", b"hub")]
    for _ in range(2):
        message, problem = cached_request_message(head, ended=False)
        assert message is None
        assert problem is not None
        assert problem.code == 405


# --- the response in one go ----------------------------------------------------------------------


class Recorder(asyncio.Transport):
    """The hub's side of the "socket": what it writes is fed to the client on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.out += data
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


async def answer(request: web.BaseRequest) -> web.StreamResponse:
    size = int(request.query.get("size", "0"))
    head = int(request.query.get("head", "0"))
    headers = {"X-Big": "h" * head} if head else {}
    if request.query.get("chunked"):
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(b"b" * size)
        await response.write_eof()
        return response
    return web.Response(body=b"b" * size, headers=headers, content_type="text/plain")


class HubAndClient:
    """A hub HTTP/2 connection serving ``handler`` into a recording transport, and an h2
    client that has queued its preface and settings (not yet pumped to the hub)."""

    def __init__(self, handler: Any, *, window: int = 1 << 20) -> None:
        self.listener = Http2Listener(web.Server(handler))
        self.hub = Http2Connection(self.listener)
        self.transport = Recorder()
        self.hub.connection_made(self.transport)
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.initiate_connection()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})


class Pair(HubAndClient):
    def __init__(self, *, window: int = 1 << 20) -> None:
        super().__init__(answer, window=window)
        self.responses: dict[int, dict[str, Any]] = {}
        self.terminated: int | None = None
        self.pump()

    def pump(self) -> None:
        self.hub.data_received(self.client.data_to_send())
        data, self.transport.out = bytes(self.transport.out), bytearray()
        for event in self.client.receive_data(data):
            stream = self.responses.setdefault(getattr(event, "stream_id", 0), {"data": b""})
            if isinstance(event, h2.events.ResponseReceived):
                stream["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                stream["data"] += event.data
                self.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                stream["reset"] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event.error_code

    async def get(self, path: str) -> dict[str, Any]:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(
            stream_id,
            [(":method", "GET"), (":scheme", "https"), (":authority", "hub"), (":path", path)],
            end_stream=True,
        )
        self.pump()
        for _ in range(200):
            await asyncio.sleep(0)
            self.pump()
            if self.responses.get(stream_id, {}).get("ended"):
                break
        return self.responses[stream_id]


async def test_small_answers_leave_in_one_write_and_h2_state_follows() -> None:
    pair = Pair()
    await pair.get("/a")  # the settings exchange goes out with the first answer
    for size in (0, 1, 1024, 16384):
        writes = pair.transport.writes
        stream = await pair.get(f"/a?size={size}")
        assert stream["headers"][b":status"] == b"200"
        assert stream["headers"][b"content-length"] == str(size).encode()
        assert stream["data"] == b"b" * size
        assert "reset" not in stream
        assert pair.transport.writes == writes + 1, "head, body and end in one write"
    assert not pair.hub.streams
    # h2 saw every stream end: none is open on its side, the connection goes on.
    exact = h2.connection.H2Connection.open_inbound_streams.fget  # type: ignore[attr-defined]
    assert exact(pair.hub.h2) == 0
    # The hub's view of the client's connection window is the client's own: every DATA byte
    # was counted once.
    pair.pump()
    client_window = pair.client._inbound_flow_control_window_manager.current_window_size
    assert pair.hub.h2.outbound_flow_control_window == client_window


async def test_a_head_larger_than_a_frame_goes_out_in_continuation_frames() -> None:
    pair = Pair()
    for size in (0, 100):
        stream = await pair.get(f"/a?size={size}&head=40000")
        assert stream["headers"][b"x-big"] == b"h" * 40000
        assert stream["data"] == b"b" * size
        assert stream.get("ended")


async def test_bodies_beyond_a_frame_or_the_window_take_the_general_path() -> None:
    pair = Pair(window=4000)
    for path in ("/a?size=5000", "/a?size=50000", "/a?size=30000&chunked=1", "/a?size=16385"):
        stream = await pair.get(path)
        assert stream.get("ended"), path
        assert len(stream["data"]) == int(path.split("size=")[1].split("&")[0])
        # The connection window came back (the client acknowledges): the next one fits.
        pair.client.increment_flow_control_window(1 << 20)
    stream = await pair.get("/a?size=10")
    assert stream["data"] == b"b" * 10


# --- a new request's HEADERS frame read directly -----------------------------------------------


def headers_frame(stream_id: int, block: bytes, flags: int = 0x5) -> bytes:
    return (
        len(block).to_bytes(3, "big") + bytes((0x1, flags)) + stream_id.to_bytes(4, "big") + block
    )


def request_block(encoder: hpack.Encoder, path: str = "/a?size=3") -> bytes:
    return encoder.encode(
        [(":method", "GET"), (":scheme", "https"), (":authority", "hub"), (":path", path)]
    )


async def settle(pair: Pair, data: bytes) -> list[tuple[str, int, frozenset[str], int]]:
    """Feed ``data`` to the hub, let it answer; the frames it wrote: (type, stream, flags,
    error code), read without a client's state (the streams were opened behind its back)."""
    pair.hub.data_received(data)
    for _ in range(50):
        await asyncio.sleep(0)
    out, pair.transport.out = bytes(pair.transport.out), bytearray()
    seen = []
    while out:
        frame, length = Frame.parse_frame_header(memoryview(out[:9]))
        frame.parse_body(memoryview(out[9 : 9 + length]))
        out = out[9 + length :]
        code = int(getattr(frame, "error_code", 0) or 0)
        if isinstance(frame, GoAwayFrame):
            pair.terminated = code
        seen.append((type(frame).__name__, frame.stream_id, frozenset(frame.flags), code))
    return seen


async def test_lone_headers_frames_open_requests_as_h2_would() -> None:
    """Requests sent as raw frames, one per read: answered; HPACK state carries over."""
    pair = Pair()
    encoder = hpack.Encoder()
    served = pair.listener.h2_streams_total
    for stream_id in (1, 3, 7):
        await settle(pair, headers_frame(stream_id, request_block(encoder)))
    assert pair.listener.h2_streams_total == served + 3
    assert pair.terminated is None
    assert not pair.hub.streams
    assert pair.hub.h2.highest_inbound_stream_id == 7


@pytest.mark.parametrize(
    "frames",
    [
        [(5, None), (3, None)],  # a stream id not above the last one
        [(1, None), (1, None)],  # the same stream opened again
        [(2, None)],  # an even (server-initiated) stream id
        [(1, b"\xff\x7f")],  # an HPACK index that does not exist
        [(1, b"\x40\x03x-a\x01b"), (3, None)],  # no pseudo-headers: malformed (stream error)
        [(1, None), (3, b"\x20")],  # a table size update alone: no :method
    ],
)
async def test_lone_headers_frames_get_the_answers_h2_gives(
    frames: list[tuple[int, bytes | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same frames, read directly and through h2's ``receive_data``: the client sees the
    same events, resets and GOAWAY codes, and the hub serves the same requests."""
    outcomes = []
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(Http2Connection, "_new_request", lambda self, data: None)
        pair = Pair()
        encoder = hpack.Encoder()
        seen: list[tuple[str, int, frozenset[str], int]] = []
        for stream_id, block in frames:
            seen += await settle(pair, headers_frame(stream_id, block or request_block(encoder)))
        outcomes.append((seen, pair.listener.h2_streams_total, pair.transport.closing))
    assert outcomes[0] == outcomes[1]


async def test_a_header_block_split_over_continuation_frames_is_still_read() -> None:
    """HEADERS without END_HEADERS, then CONTINUATION, each in its own read."""
    pair = Pair()
    block = request_block(hpack.Encoder(), "/a?size=4")
    first = headers_frame(1, block[:5], flags=0x1)
    rest = len(block[5:]).to_bytes(3, "big") + bytes((0x9, 0x4)) + (1).to_bytes(4, "big")
    await settle(pair, first)
    assert pair.listener.h2_streams_total == 0
    await settle(pair, rest + block[5:])
    assert pair.listener.h2_streams_total == 1
    assert pair.terminated is None


async def test_too_many_streams_are_refused_on_the_direct_path_too() -> None:
    """The stream limit holds for requests read directly (h2's check runs as before)."""
    pair = Pair()
    pair.hub.h2.local_settings = h2.settings.Settings(
        client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: 2}
    )
    encoder = hpack.Encoder()
    for stream_id in (1, 3, 5):
        await settle(pair, headers_frame(stream_id, request_block(encoder, "/hang")))
    assert pair.terminated is not None or 5 not in pair.hub.streams
