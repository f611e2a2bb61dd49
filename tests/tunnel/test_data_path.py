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
from aiohttp import web

from clusternet_aa.tunnel.protocol import codec, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.settings import Settings
from clusternet_aa.tunnel.streams import TunnelStream
from clusternet_aa.tunnel.transport import (
    SMALL_MESSAGE,
    TunnelFrameReader,
    WebSocketTransport,
    _send_binary,
    frame_header,
)


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
    server_side: asyncio.Future[WebSocketTransport] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        server_side.set_result(WebSocketTransport(ws))
        await done.wait()
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(f"http://127.0.0.1:{port}/ws", max_msg_size=4 * 1024 * 1024)
        yield WebSocketTransport(ws), await server_side
        done.set()
        await ws.close()
    await runner.cleanup()


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
        assert stream.buffered == len(expected) - len(got) == sum(map(len, stream._chunks))
    assert bytes(got) == expected
    assert acks.acknowledged == len(expected)


async def test_read_all_after_a_cut_returns_the_remainder() -> None:
    stream = new_stream(Acks())
    stream._feed(b"abcdef")
    assert await stream.read(2) == b"ab"
    stream._feed(b"gh")
    assert await stream.read() == b"cdefgh"
    assert await stream.readexactly(0) == b""


# ---------------------------------------------------------------------- the hub's frame reader


class Queue:
    """Stands in for aiohttp's WebSocketDataQueue: records what the reader delivers."""

    def __init__(self) -> None:
        self.messages: list[tuple[aiohttp.WSMsgType, Any, int]] = []
        self.error: BaseException | None = None
        self.eof = False

    def feed_data(self, msg: aiohttp.WSMessage, size: int) -> None:
        self.messages.append((msg.type, msg.data, size))

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc

    def feed_eof(self) -> None:
        self.eof = True


def client_frame(
    payload: bytes,
    opcode: int = 0x2,
    *,
    fin: bool = True,
    mask: bytes | None = b"k3y!",
    rsv: int = 0,
) -> bytes:
    """One frame as a client writes it (masked unless ``mask`` is None)."""
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        header = struct.pack("!BB", first, size | mask_bit)
    elif size < 0x10000:
        header = struct.pack("!BBH", first, 126 | mask_bit, size)
    else:
        header = struct.pack("!BBQ", first, 127 | mask_bit, size)
    if mask is None:
        return header + payload
    return header + mask + unmask(mask, payload)  # XOR is its own inverse


def read_frames(*chunks: bytes, max_size: int = 1 << 20) -> Queue:
    queue = Queue()
    reader = TunnelFrameReader(queue, max_size)
    for chunk in chunks:
        reader.feed_data(chunk)
    return queue


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_reader_delivers_a_message_split_anywhere(size: int) -> None:
    payload = os.urandom(size)
    wire = client_frame(payload)
    cuts = sorted({0, 1, 2, 5, 9, 13, len(wire) // 2, len(wire) - 1, len(wire)})
    for cut in cuts:
        queue = read_frames(wire[:cut], wire[cut:])
        assert queue.error is None
        ((kind, data, counted),) = queue.messages
        assert kind is aiohttp.WSMsgType.BINARY
        assert type(data) is bytearray
        assert data == payload
        assert counted == size
    # And byte by byte, headers included.
    queue = read_frames(*(wire[i : i + 1] for i in range(min(len(wire), 40))), wire[40:])
    assert [m[1] for m in queue.messages] == [payload]


def test_reader_handles_control_text_and_fragments_in_one_read() -> None:
    wire = b"".join(
        (
            client_frame(b"part one ", fin=False),
            client_frame(b"ping!", 0x9),
            client_frame(b"part two", 0x0, fin=False),
            client_frame(b"", 0x0),
            client_frame("héllo".encode(), 0x1),
            client_frame(b"pong", 0xA),
            client_frame(b"", 0x2),
            client_frame(struct.pack("!H", 1000) + b"bye", 0x8),
            client_frame(b"", 0x8),
        )
    )
    queue = read_frames(wire)
    assert queue.error is None
    assert [
        (kind, bytes(data) if isinstance(data, bytearray) else data)
        for kind, data, _ in queue.messages
    ] == [
        (aiohttp.WSMsgType.PING, b"ping!"),
        (aiohttp.WSMsgType.BINARY, b"part one part two"),
        (aiohttp.WSMsgType.TEXT, "héllo"),
        (aiohttp.WSMsgType.PONG, b"pong"),
        (aiohttp.WSMsgType.BINARY, b""),
        (aiohttp.WSMsgType.CLOSE, 1000),
        (aiohttp.WSMsgType.CLOSE, 0),
    ]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(b"x", mask=None), 1002),
        (client_frame(b"x", rsv=0x40), 1002),
        (client_frame(b"x", 0x3), 1002),
        (client_frame(b"x", 0xB), 1002),
        (client_frame(b"x", 0x9, fin=False), 1002),
        (client_frame(b"x" * 126, 0x9), 1002),
        (client_frame(b"x", 0x0), 1002),
        (client_frame(b"a", fin=False) + client_frame(b"b"), 1002),
        (client_frame(b"x" * 1024), 1009),
        (client_frame(b"x" * 1000, fin=False) + client_frame(b"x" * 100, 0x0), 1009),
        (client_frame(b"\x03", 0x8), 1002),
        (client_frame(struct.pack("!H", 999), 0x8), 1002),
        (client_frame(struct.pack("!H", 1000) + b"\xff", 0x8), 1007),
        (client_frame(b"\xff\xfe", 0x1), 1007),
    ],
    ids=[
        "unmasked",
        "rsv1",
        "opcode 3",
        "opcode 11",
        "fragmented ping",
        "long ping",
        "orphan continuation",
        "new message inside a fragmented one",
        "too big",
        "fragments too big",
        "close of one byte",
        "bad close code",
        "close reason not utf-8",
        "text not utf-8",
    ],
)
def test_reader_fails_bad_frames(wire: bytes, code: int) -> None:
    queue = Queue()
    reader = TunnelFrameReader(queue, 1024)
    assert reader.feed_data(wire + client_frame(b"after")) == (True, b"")
    assert isinstance(queue.error, aiohttp.WebSocketError)
    assert queue.error.code == code
    assert all(
        kind is not aiohttp.WSMsgType.BINARY or data != b"after" for kind, data, _ in queue.messages
    )
    assert reader.feed_data(client_frame(b"later")) == (True, b"")
    reader.feed_eof()
    assert queue.eof


async def test_accepted_websocket_uses_the_tunnel_reader() -> None:
    """A real server websocket from ``accept``: pings answered, big masked messages arrive
    whole as bytearrays, and the close handshake completes."""
    from clusternet_aa.tunnel.websocket import accept

    received: list[Any] = []
    finished = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws, _session = await accept(request)
        assert isinstance(ws._parser, TunnelFrameReader)
        async for msg in ws:
            received.append(msg.data)
        finished.set()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(
                f"http://127.0.0.1:{port}/ws", protocols=("clusternet.tunnel.v1",), autoping=False
            )
            await ws.ping(b"are you there")
            pong = await asyncio.wait_for(ws.receive(), 5)
            assert pong.type is aiohttp.WSMsgType.PONG
            assert pong.data == b"are you there"
            big = os.urandom(700_000)
            await ws.send_bytes(big)
            await WebSocketTransport(ws).send(bytearray(b"small"))
            await ws.close()
            await asyncio.wait_for(finished.wait(), 5)
        assert [bytes(m) for m in received] == [big, b"small"]
        assert all(type(m) is bytearray for m in received)
    finally:
        await runner.cleanup()


def test_reader_holds_only_the_bytes_that_arrived() -> None:
    """A header announcing a large frame does not make the hub allocate that frame."""
    queue = Queue()
    reader = TunnelFrameReader(queue, 1 << 20)
    wire = client_frame(os.urandom(1_000_000))
    reader.feed_data(wire[:14])
    assert reader._frame is not None
    assert len(reader._frame) == 0
    reader.feed_data(wire[14:1014])
    assert len(reader._frame) == 1000
    reader.feed_data(wire[1014:])
    assert reader._frame is None
    assert len(queue.messages) == 1
