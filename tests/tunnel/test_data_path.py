"""The bulk data path: websocket framing without extra copies, and stream reads that copy
only what they return."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.streams import ResponseHead, StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import (
    SMALL_MESSAGE,
    WebSocketTransport,
    _send_binary,
    frame_header,
    memory_pair,
)
from tests.tunnel.ws_helpers import websocket_pair


def unmask(mask: bytes, data: bytes | bytearray) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, b"\x82\x00"),
        (125, b"\x82\x7d"),
        (126, b"\x82\x7e\x00\x7e"),
        (65535, b"\x82\x7e\xff\xff"),
        (65536, b"\x82\x7f" + struct.pack("!Q", 65536)),
        (2**40, b"\x82\x7f" + struct.pack("!Q", 2**40)),
    ],
)
def test_frame_header_lengths(size: int, expected: bytes) -> None:
    assert frame_header(size, None) == expected
    masked = frame_header(size, b"abcd")
    assert masked[0] == 0x82
    assert masked[1] == expected[1] | 0x80
    assert masked[2:-4] == expected[2:]
    assert masked[-4:] == b"abcd"


class FakeProtocol:
    def __init__(self, *, paused: bool = False) -> None:
        self._paused = paused
        self.drained = 0

    async def _drain_helper(self) -> None:
        self.drained += 1


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.closing = False

    def writelines(self, parts: tuple[Any, ...]) -> None:
        self.writes.append(parts)

    def write(self, data: bytes) -> None:
        self.writes.append((data,))

    def is_closing(self) -> bool:
        return self.closing


class FakeWriter:
    def __init__(self, *, use_mask: bool, paused: bool = False) -> None:
        self.use_mask = use_mask
        self.transport = FakeTransport()
        self.protocol = FakeProtocol(paused=paused)
        self._closing = False


async def test_client_masks_a_bytearray_in_place_with_fresh_keys() -> None:
    writer = FakeWriter(use_mask=True)
    payload = os.urandom(200_000)
    message = bytearray(payload)
    await _send_binary(writer, message)
    await _send_binary(writer, bytearray(payload))
    (header, body), (header2, _) = writer.transport.writes
    assert body is message  # masked where it was: no copy
    assert header[:2] == b"\x82\xff"
    assert struct.unpack("!Q", header[2:10])[0] == len(payload)
    mask = header[10:]
    assert len(header) == 14
    assert header2[10:] != mask
    assert unmask(mask, body) == payload
    assert writer.protocol.drained == 0


async def test_client_copies_immutable_bytes_once_and_leaves_them_alone() -> None:
    writer = FakeWriter(use_mask=True)
    payload = b"hello tunnel" * 2000
    await _send_binary(writer, payload)
    ((header, body),) = writer.transport.writes
    assert type(body) is bytearray
    assert unmask(header[-4:], body) == payload == b"hello tunnel" * 2000


@pytest.mark.parametrize("use_mask", [True, False])
async def test_small_message_is_one_write_with_its_header(use_mask: bool) -> None:
    writer = FakeWriter(use_mask=use_mask)
    payload = os.urandom(SMALL_MESSAGE)
    await _send_binary(writer, bytearray(payload))
    ((frame,),) = writer.transport.writes
    header = frame_header(len(payload), frame[4:8] if use_mask else None)
    assert frame[: len(header)] == header
    body = frame[len(header) :]
    assert (unmask(header[-4:], body) if use_mask else body) == payload


async def test_server_writes_the_message_unmasked_and_uncopied() -> None:
    writer = FakeWriter(use_mask=False, paused=True)
    payload = os.urandom(SMALL_MESSAGE + 1)
    await _send_binary(writer, payload)
    ((header, body),) = writer.transport.writes
    assert header == b"\x82\x7e\x40\x01"
    assert body is payload
    assert writer.protocol.drained == 1  # a paused transport makes the sender wait


@pytest.mark.parametrize("where", ["writer", "transport"])
async def test_closing_link_refuses_the_write(where: str) -> None:
    writer = FakeWriter(use_mask=False)
    if where == "writer":
        writer._closing = True
    else:
        writer.transport.closing = True
    with pytest.raises(aiohttp.ClientConnectionResetError):
        await _send_binary(writer, b"x")
    assert writer.transport.writes == []


@pytest.fixture
async def ws_pair() -> AsyncIterator[tuple[WebSocketTransport, WebSocketTransport]]:
    """A real aiohttp websocket on 127.0.0.1: (client transport, server transport)."""
    async with websocket_pair(4 * 1024 * 1024) as pair:
        yield pair


async def test_real_websocket_both_ways_without_send_bytes(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, server = ws_pair

    async def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the slow path was taken")

    for side in (client, server):
        monkeypatch.setattr(side._ws, "send_bytes", refuse)
    # Sizes across the three header forms; the peer (aiohttp's reader) unmasks and checks.
    for size in (1, 125, 126, 65535, 65536, 3 * 1024 * 1024):
        payload = os.urandom(size)
        await client.send(bytearray(payload))
        assert await server.receive() == payload
        await server.send(payload)
        assert await client.receive() == payload
    await client.send(b"immutable")
    assert await server.receive() == b"immutable"


def test_messages_are_fresh_bytearrays_the_client_may_mask_in_place() -> None:
    conn = Connection(Role.CLIENT)
    hello = conn.data_to_send()
    assert type(hello) is bytearray
    assert codec.decode_message(hello, max_frame_size=1 << 20)[0] == frames.Hello(
        Settings().to_wire()
    )
    assert conn.data_to_send() == bytearray()


class Acks:
    """Stands in for the session: records the credit a stream returns."""

    def __init__(self) -> None:
        self.acknowledged = 0
        self._loop = asyncio.get_running_loop()

    def _acknowledge(self, stream_id: int, size: int) -> None:
        self.acknowledged += size


def new_stream(acks: Acks) -> TunnelStream:
    return TunnelStream(
        acks,  # type: ignore[arg-type]
        1,
        target=frames.DialTarget("tcp", "127.0.0.1:1"),
        metadata={},
    )


async def test_read_of_whole_chunks_returns_them_uncopied() -> None:
    acks = Acks()
    stream = new_stream(acks)
    first, second = os.urandom(65536), os.urandom(65536)
    stream._feed(first)
    stream._feed(second)
    assert await stream.read(65536) is first
    assert await stream.read() is second
    assert acks.acknowledged == 131072
    assert stream.buffered == 0


async def test_partial_reads_cut_chunks_and_keep_the_rest() -> None:
    acks = Acks()
    stream = new_stream(acks)
    chunks = [os.urandom(n) for n in (1000, 70000, 3, 65536, 12345)]
    for chunk in chunks:
        stream._feed(chunk)
    stream._feed_eof()
    expected = b"".join(chunks)
    got = bytearray()
    sizes = iter((500, 501, 65536, 65536, 1, 2, 10000, 7, 100000))
    while data := await stream.read(next(sizes, 4096)):
        assert type(data) is bytes
        got += data
        assert stream.buffered == len(expected) - len(got) == sum(map(len, stream._chunks or ()))
    assert bytes(got) == expected
    assert acks.acknowledged == len(expected)


async def test_read_all_after_a_cut_returns_the_remainder() -> None:
    stream = new_stream(Acks())
    stream._feed(b"abcdef")
    assert await stream.read(2) == b"ab"
    stream._feed(b"gh")
    assert await stream.read() == b"cdefgh"
    assert await stream.readexactly(0) == b""


async def test_take_response_hands_the_head_over_and_forgets_it() -> None:
    stream = new_stream(Acks())
    head = ResponseHead(200, (("content-type", "application/json"),))
    stream._set_response(head)
    assert await stream.response() is head  # response() may be asked again...
    assert await stream.take_response() is head  # ...take_response() hands it over
    assert stream._response is None
    with pytest.raises(RuntimeError, match="taken"):
        await stream.response()
    stream._set_response(ResponseHead(500))  # a late head changes nothing
    stream._fail(StreamResetError(ErrorCode.CANCEL, "gone", remote=False))
    with pytest.raises(StreamResetError):
        await stream.read()


def test_mask_keys_come_from_the_os_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from clusternet_aa.tunnel import transport

    calls: list[int] = []
    real_urandom = os.urandom

    def counting_urandom(size: int) -> bytes:
        calls.append(size)
        return real_urandom(size)

    monkeypatch.setattr(transport.os, "urandom", counting_urandom)
    keys = transport._MaskKeys()
    taken = [keys.take() for _ in range(3 * transport._MASK_BATCH + 1)]
    assert all(len(key) == 4 for key in taken)
    assert calls == [4 * transport._MASK_BATCH] * 4  # one getrandom per batch of keys
    assert len(set(taken)) > len(taken) * 0.99  # fresh keys, not one repeated


async def test_send_nowait_writes_unless_the_transport_is_paused(
    ws_pair: tuple[WebSocketTransport, WebSocketTransport],
) -> None:
    client, server = ws_pair
    for sender, receiver in ((client, server), (server, client)):
        payload = os.urandom(300)
        assert sender.send_nowait(bytearray(payload)) is True
        assert await receiver.receive() == payload
        protocol = sender._ws._writer.protocol  # type: ignore[union-attr]
        protocol._paused = True  # as after pause_writing(): the caller must await send()
        try:
            assert sender.send_nowait(b"not now") is False
        finally:
            protocol._paused = False
        assert sender.send_nowait(b"now") is True
        assert await receiver.receive() == b"now"


async def test_memory_transport_send_nowait_respects_the_depth() -> None:
    a, b = memory_pair(depth=2)
    assert a.send_nowait(bytearray(b"one")) is True
    assert a.send_nowait(b"two") is True
    assert a.send_nowait(b"three") is False  # no slot: the caller must await send()
    assert await b.receive() == b"one"
    assert a.send_nowait(b"three") is True
    assert [await b.receive(), await b.receive()] == [b"two", b"three"]
    await a.close()
    with pytest.raises(ConnectionResetError):
        a.send_nowait(b"four")
