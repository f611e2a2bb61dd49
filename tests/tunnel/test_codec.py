"""The msgpack codec: exact round trips, the DATA fast path, and strict decoding."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.errors import (
    ErrorCode,
    FrameTooLargeError,
    RemoteProtocolError,
)
from clusternet_aa.tunnel.protocol.frames import FrameType
from clusternet_aa.tunnel.protocol.settings import FRAME_OVERHEAD, Settings
from tests.tunnel.helpers import raw

MAX = 64 * 1024

ALL_FRAMES: list[frames.Frame] = [
    frames.Hello(Settings().to_wire()),
    frames.Open(1, frames.HttpRequestHead("GET", "/api", (("a", "1"), ("a", "2"))), {"u": "x"}),
    frames.Open(3, frames.HttpRequestHead("POST", "/")),
    frames.Open(2, frames.DialTarget("tcp", "10.0.0.1:443"), {"groups": ["a", "b"]}),
    frames.ResponseHeaders(1, 200, (("content-type", "application/json"),), {"x": 1}),
    frames.ResponseHeaders(1, 101),
    frames.Data(5, b"payload"),
    frames.Data(5, b""),
    frames.WindowUpdate(0, 1),
    frames.WindowUpdate(7, 2**31 - 1),
    frames.End(9),
    frames.Reset(9, ErrorCode.CANCEL, "bye"),
    frames.Reset(9, 999),
    frames.Ping(0),
    frames.Ping(2**64 - 1),
    frames.Pong(-(2**63)),
    frames.GoAway(2**63 - 1, 0, "drain"),
    frames.GoAway(0, ErrorCode.PROTOCOL_ERROR),
]


def decode(data: bytes, max_frame_size: int = MAX) -> list[frames.Frame]:
    return codec.decode_message(data, max_frame_size=max_frame_size)


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips(frame: frames.Frame) -> None:
    assert decode(codec.encode(frame)) == [frame]


def test_several_frames_share_one_message() -> None:
    data = b"".join(codec.encode(f) for f in ALL_FRAMES)
    assert decode(data) == ALL_FRAMES


def test_wire_layout_is_type_then_stream_id() -> None:
    assert msgpack.unpackb(codec.encode(frames.End(7))) == [FrameType.END, 7]
    assert msgpack.unpackb(codec.encode(frames.Ping(5))) == [FrameType.PING, 0, 5]
    assert msgpack.unpackb(codec.encode(frames.GoAway(4, 1, "r"))) == [9, 0, 4, 1, "r"]
    head = msgpack.unpackb(codec.encode(frames.Open(1, frames.DialTarget("tcp", "h:1"))))
    assert head == [1, 1, "dial", {"network": "tcp", "address": "h:1"}, {}]


@pytest.mark.parametrize("size", [0, 1, 0xFF, 0x100, 0xFFFF, 0x10000, 70_000])
@pytest.mark.parametrize("stream_id", [1, 127, 128, 65_536, 2**40])
def test_encode_data_fast_path_is_byte_identical(size: int, stream_id: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    fast = codec.encode_data(stream_id, payload)
    assert fast == codec.encode(frames.Data(stream_id, payload))
    assert decode(fast, max_frame_size=1 << 20) == [frames.Data(stream_id, payload)]


# ------------------------------------------------------------------ decoding untrusted input

BAD_MESSAGES: dict[str, bytes] = {
    "empty message": b"",
    "not msgpack (reserved byte 0xc1)": b"\xc1",
    "invalid utf-8 string": b"\x92\xa2\xff\xfe\x00",
    "non-string map key": raw([0, 0, {1: 2}]),
    "truncated array": raw([3, 1, b"abc"])[:-1],
    "trailing garbage byte after a frame": raw([5, 1]) + b"\x92",
    "deeply nested": b"\x91" * 2000 + b"\x00",
    "not an array": raw({"type": 3}),
    "array of one": raw([3]),
    "type not an int": raw(["DATA", 1, b""]),
    "bool type": raw([True, 1, b""]),
    "stream id not an int": raw([3, "1", b""]),
    "stream id negative": raw([3, -1, b""]),
    "stream id above 2**63-1": raw([3, 2**63, b""]),
    "unknown frame type": raw([42, 0]),
    "negative frame type": raw([-1, 0]),
    "DATA arity": raw([3, 1]),
    "END arity": raw([5, 1, None]),
    "GOAWAY arity": raw([9, 0, 1, 0]),
    "HELLO on a stream": raw([0, 1, {}]),
    "HELLO settings not a map": raw([0, 0, [1, 2]]),
    "OPEN on stream 0": raw([1, 0, "http", {"method": "GET", "path": "/"}, {}]),
    "OPEN target not a map": raw([1, 1, "http", ["GET", "/"], {}]),
    "OPEN unknown kind": raw([1, 1, "ftp", {}, {}]),
    "OPEN unhashable kind": raw([1, 1, ["http"], {}, {}]),
    "OPEN http without path": raw([1, 1, "http", {"method": "GET"}, {}]),
    "OPEN http method not str": raw([1, 1, "http", {"method": 1, "path": "/"}, {}]),
    "OPEN headers not an array": raw(
        [1, 1, "http", {"method": "GET", "path": "/", "headers": {}}, {}]
    ),
    "OPEN header not a pair": raw(
        [1, 1, "http", {"method": "G", "path": "/", "headers": [["a"]]}, {}]
    ),
    "OPEN header not an array": raw(
        [1, 1, "http", {"method": "G", "path": "/", "headers": ["a"]}, {}]
    ),
    "OPEN header value bytes": raw(
        [1, 1, "http", {"method": "G", "path": "/", "headers": [["a", b"v"]]}, {}]
    ),
    "OPEN dial without address": raw([1, 1, "dial", {"network": "tcp"}, {}]),
    "OPEN metadata not a map": raw([1, 1, "dial", {"network": "tcp", "address": "a"}, []]),
    "HEADERS on stream 0": raw([2, 0, 200, [], {}]),
    "HEADERS status not int": raw([2, 1, "200", [], {}]),
    "HEADERS status 99": raw([2, 1, 99, [], {}]),
    "HEADERS status 1000": raw([2, 1, 1000, [], {}]),
    "HEADERS header name int": raw([2, 1, 200, [[1, "v"]], {}]),
    "HEADERS metadata nil": raw([2, 1, 200, [], None]),
    "DATA on stream 0": raw([3, 0, b"x"]),
    "DATA payload a string": raw([3, 1, "text"]),
    "WINDOW_UPDATE of 0": raw([4, 1, 0]),
    "WINDOW_UPDATE negative": raw([4, 0, -5]),
    "WINDOW_UPDATE above 2**31-1": raw([4, 0, 2**31]),
    "WINDOW_UPDATE not int": raw([4, 0, 1.5]),
    "END on stream 0": raw([5, 0]),
    "RESET on stream 0": raw([6, 0, 0, ""]),
    "RESET code not int": raw([6, 1, "CANCEL", ""]),
    "RESET reason not str": raw([6, 1, 7, None]),
    "PING on a stream": raw([7, 1, 0]),
    "PING opaque not int": raw([7, 0, b"x"]),
    "PONG on a stream": raw([8, 1, 0]),
    "PONG opaque not int": raw([8, 0, None]),
    "GOAWAY on a stream": raw([9, 1, 0, 0, ""]),
    "GOAWAY last id negative": raw([9, 0, -1, 0, ""]),
    "GOAWAY last id not int": raw([9, 0, "1", 0, ""]),
    "GOAWAY reason not str": raw([9, 0, 1, 0, 1]),
    "ext type": b"\xd4\x05\x00",
    "timestamp ext": msgpack.packb(msgpack.Timestamp(1, 0)),
    "bad timestamp ext": b"\xd5\xff\x00\x00",
    "good frame then a bad one": raw([5, 1], [5, 0]),
}


@pytest.mark.parametrize("data", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_malformed_messages_raise_remote_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    assert info.value.code is ErrorCode.PROTOCOL_ERROR
    assert info.value.stream_id == 0


def test_data_payload_over_the_limit_is_frame_size_error() -> None:
    with pytest.raises(FrameTooLargeError) as info:
        decode(codec.encode_data(1, bytes(1025)), max_frame_size=1024)
    assert info.value.code is ErrorCode.FRAME_SIZE_ERROR
    # Exactly the limit is fine.
    assert decode(codec.encode_data(1, bytes(1024)), max_frame_size=1024)


def test_control_frame_over_the_limit_is_frame_size_error() -> None:
    limit = 1024 + FRAME_OVERHEAD
    big = frames.Reset(1, 0, "x" * limit)
    with pytest.raises(FrameTooLargeError, match="exceeds"):
        decode(codec.encode(big), max_frame_size=1024)


def test_frame_size_is_checked_per_frame_not_per_message() -> None:
    frame = codec.encode_data(1, bytes(1000))
    assert len(decode(frame * 10, max_frame_size=1024)) == 10


def test_a_huge_data_frame_behind_small_ones_is_caught() -> None:
    data = codec.encode(frames.End(1)) + codec.encode_data(3, bytes(5000))
    with pytest.raises(FrameTooLargeError):
        decode(data, max_frame_size=1024)


def test_http_open_headers_default_to_empty() -> None:
    data = raw([1, 1, "http", {"method": "GET", "path": "/"}, {}])
    assert decode(data) == [frames.Open(1, frames.HttpRequestHead("GET", "/", ()), {})]


def test_unknown_keys_in_open_target_are_ignored() -> None:
    data = raw([1, 1, "dial", {"network": "tcp", "address": "a:1", "future": True}, {}])
    assert decode(data) == [frames.Open(1, frames.DialTarget("tcp", "a:1"), {})]


def test_encode_rejects_non_frames() -> None:
    with pytest.raises(TypeError):
        codec.encode("not a frame")  # type: ignore[arg-type]


def _as_list(frame: frames.Frame) -> list[Any]:
    return list(msgpack.unpackb(codec.encode(frame)))


def test_window_update_may_use_stream_zero() -> None:
    assert _as_list(frames.WindowUpdate(0, 10)) == [4, 0, 10]


@pytest.mark.parametrize("stream_id", [1, 0x7F, 0x80, 0xFFFF, 2**40, 2**63 - 1])
def test_encode_end_fast_path_is_byte_identical(stream_id: int) -> None:
    fast = codec.encode_end(stream_id)
    assert fast == codec.encode(frames.End(stream_id))
    assert decode(fast) == [frames.End(stream_id)]


def test_headers_go_on_the_wire_as_arrays_and_come_back_as_tuples() -> None:
    headers = (("accept", "application/json"), ("x-a", ""), ("x-a", "2"))
    frame = frames.ResponseHeaders(3, 200, headers, {"k": [1, 2]})
    wire = msgpack.unpackb(codec.encode(frame))
    assert wire == [FrameType.HEADERS, 3, 200, [list(h) for h in headers], {"k": [1, 2]}]
    (back,) = decode(codec.encode(frame))
    assert back == frame
    assert isinstance(back, frames.ResponseHeaders)
    assert all(type(pair) is tuple for pair in back.headers)
