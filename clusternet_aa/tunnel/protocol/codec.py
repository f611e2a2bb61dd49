"""msgpack encoding of frames, and strict decoding of untrusted websocket messages.

A websocket message holds one or more frames, each a msgpack array written back to back.
Decoding checks the shape of every frame before building it, so a malformed message from the
peer becomes a :class:`RemoteProtocolError` and never a ``TypeError`` deep in the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import FrameTooLargeError, RemoteProtocolError
from clusternet_aa.tunnel.protocol.frames import FrameType
from clusternet_aa.tunnel.protocol.settings import FRAME_OVERHEAD

_MAX_ID = 2**63 - 1
_MAX_INCREMENT = 2**31 - 1


#: One packer for every frame: ``packb`` makes (and frees) a Packer per call. ``pack`` runs
#: without releasing the GIL and resets the packer's buffer after each call, so sharing it is
#: safe.
_pack = msgpack.Packer(use_bin_type=True).pack


def encode(frame: frames.Frame) -> bytes:
    """The msgpack bytes of one frame."""
    return _pack(_to_wire(frame))


def encode_end(stream_id: int) -> bytes:
    """An END frame, sent once per stream each way: equal to ``encode(frames.End(stream_id))``,
    byte for byte, without building the frame."""
    if stream_id < 0x80:
        return b"\x92\x05" + _FIXINT[stream_id]
    return b"\x92\x05" + _pack(stream_id)


def encode_open(stream_id: int, target: frames.Target, metadata: Mapping[str, Any] | None) -> bytes:
    """An OPEN frame, equal to ``encode(frames.Open(stream_id, target, dict(metadata or {})))``
    byte for byte, without building the frame (once per proxied request)."""
    meta = metadata if type(metadata) is dict else dict(metadata or {})
    if type(target) is frames.HttpRequestHead:
        head = {"method": target.method, "path": target.path, "headers": target.headers}
        return _pack([FrameType.OPEN, stream_id, "http", head, meta])
    return encode(frames.Open(stream_id, target, meta))


def encode_headers(
    stream_id: int,
    status: int,
    headers: frames.Headers,
    metadata: Mapping[str, Any] | None,
) -> bytes:
    """A HEADERS frame, equal to ``encode(frames.ResponseHeaders(stream_id, status, headers,
    dict(metadata or {})))`` byte for byte, without building the frame."""
    meta = metadata if type(metadata) is dict else dict(metadata or {})
    return _pack([FrameType.HEADERS, stream_id, status, headers, meta])


def encode_window_update(stream_id: int, increment: int) -> bytes:
    """Equal to ``encode(frames.WindowUpdate(stream_id, increment))``, byte for byte."""
    return _pack([FrameType.WINDOW_UPDATE, stream_id, increment])


def encode_data(stream_id: int, payload: bytes) -> bytes:
    """A DATA frame without building a list first. Equal to
    ``encode(frames.Data(stream_id, payload))``, byte for byte."""
    return data_header(stream_id, len(payload)) + payload


def data_header(stream_id: int, size: int) -> bytes:
    """The bytes of a DATA frame before its ``size`` bytes of payload: the hot path, which lets
    the sender join header and payload straight into the message (one copy of the payload)."""
    sid = _FIXINT[stream_id] if stream_id < 0x80 else _pack(stream_id)
    if size < 0x100:
        return b"\x93\x03" + sid + b"\xc4" + size.to_bytes(1, "big")
    if size < 0x10000:
        return b"\x93\x03" + sid + b"\xc5" + size.to_bytes(2, "big")
    return b"\x93\x03" + sid + b"\xc6" + size.to_bytes(4, "big")


_FIXINT = [bytes((i,)) for i in range(0x80)]
_END = int(FrameType.END)


def _to_wire(frame: frames.Frame) -> list[Any]:
    # Header pairs go as the tuples they are: msgpack packs a tuple as an array, the same
    # bytes as a list, without building a list per header.
    match frame:
        case frames.Data(stream_id, data):
            return [FrameType.DATA, stream_id, data]
        case frames.WindowUpdate(stream_id, increment):
            return [FrameType.WINDOW_UPDATE, stream_id, increment]
        case frames.Open(stream_id, frames.HttpRequestHead(method, path, headers), metadata):
            head = {"method": method, "path": path, "headers": headers}
            return [FrameType.OPEN, stream_id, "http", head, metadata]
        case frames.Open(stream_id, frames.DialTarget(network, address), metadata):
            dial = {"network": network, "address": address}
            return [FrameType.OPEN, stream_id, "dial", dial, metadata]
        case frames.ResponseHeaders(stream_id, status, headers, metadata):
            return [FrameType.HEADERS, stream_id, status, headers, metadata]
        case frames.End(stream_id):
            return [FrameType.END, stream_id]
        case frames.Reset(stream_id, code, reason):
            return [FrameType.RESET, stream_id, code, reason]
        case frames.Ping(opaque):
            return [FrameType.PING, 0, opaque]
        case frames.Pong(opaque):
            return [FrameType.PONG, 0, opaque]
        case frames.GoAway(last_stream_id, code, reason):
            return [FrameType.GOAWAY, 0, last_stream_id, code, reason]
        case frames.Hello(settings):
            return [FrameType.HELLO, 0, settings]
    raise TypeError(f"not a frame: {frame!r}")  # pragma: no cover - exhaustive above


#: Width of the big-endian integer after each msgpack type byte a DATA frame may use: unsigned
#: ints for the stream id, bin 8/16/32 for the payload.
_UINT_WIDTH = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


#: A decoded, validated frame as :class:`Connection` consumes it: a list of the frame type
#: followed by the frame's fields in the order its class declares them, the stream id second
#: (0 for the session frames, whose classes have none). Building the frame classes is left to
#: :func:`decode_message`: the connection acts on these lists directly, which spares a frozen
#: dataclass per frame on the receive path.
WireFrame = list[Any]


def decode_message(message: bytes, *, max_frame_size: int) -> list[frames.Frame]:
    """All frames of one websocket message, validated.

    ``max_frame_size`` is the DATA payload limit we announced; any other frame must fit in it
    plus :data:`FRAME_OVERHEAD` as well.
    """
    return [_frame_of(item) for item in decode_wire(message, max_frame_size)]


def _frame_of(item: WireFrame) -> frames.Frame:
    cls, first = _FRAME_CLASSES[item[0]]
    frame: frames.Frame = cls(*item[first:])
    return frame


def decode_wire(message: bytes, max_frame_size: int) -> list[WireFrame]:
    """:func:`decode_message`, as :data:`WireFrame` lists: the same checks, the same errors.

    Leading DATA frames in their canonical encoding (what :func:`data_header` writes) are parsed
    by hand, copying each payload once; the first frame that is anything else, or anything
    unusual, hands the rest of the message to the general msgpack decoder, which validates it
    (and reports any fault) exactly as it would have.
    """
    decoded: list[WireFrame] = []
    offset = 0
    size = len(message) if type(message) is bytes else 0
    if size and message[0] != 0x93:  # not a DATA frame first: skip the call to _fast_data
        return _decode_general(message, max_frame_size)
    while offset < size:
        frame = _fast_data(message, offset, size, max_frame_size)
        if frame is None:
            break
        decoded.append(frame[0])
        offset = frame[1]
    if decoded and offset == size:
        return decoded
    decoded.extend(_decode_general(message[offset:] if offset else message, max_frame_size))
    return decoded


def _fast_data(
    message: bytes, offset: int, size: int, max_frame_size: int
) -> tuple[WireFrame, int] | None:
    """The canonical DATA frame at ``offset`` and where it ends, or None for anything else
    (another frame type, an odd encoding, a fault) so the general decoder can judge it."""
    if size - offset < 5 or message[offset] != 0x93 or message[offset + 1] != 0x03:
        return None
    pos = offset + 2
    kind = message[pos]
    if kind < 0x80:
        stream_id = kind
        pos += 1
    else:
        width = _UINT_WIDTH.get(kind)
        if width is None or pos + 1 + width > size:
            return None
        stream_id = int.from_bytes(message[pos + 1 : pos + 1 + width], "big")
        pos += 1 + width
        if stream_id > _MAX_ID:
            return None
    if stream_id == 0 or pos >= size:
        return None
    width = _BIN_WIDTH.get(message[pos])
    if width is None or pos + 1 + width > size:
        return None
    length = int.from_bytes(message[pos + 1 : pos + 1 + width], "big")
    start = pos + 1 + width
    end = start + length
    if end > size or length > max_frame_size or end - offset > max_frame_size + FRAME_OVERHEAD:
        return None
    return [FrameType.DATA, stream_id, message[start:end]], end


#: Messages up to this size are decoded with a reused Unpacker (see :func:`_decode_general`).
_REUSE_LIMIT = 64 * 1024
#: Unpackers ready for reuse. Taking one with ``pop`` and returning it with ``append`` (both
#: atomic) keeps each in the hands of one decoder at a time, whatever the threads.
_SPARE_UNPACKERS: list[msgpack.Unpacker] = []


def _decode_general(message: bytes, max_frame_size: int) -> list[WireFrame]:
    """Decode with msgpack's streaming Unpacker, which tells where each frame ends.

    Making an Unpacker costs more than decoding a small message with it: the object embeds its
    parse stack (tens of KiB, zeroed at allocation), about 45,000 instructions and as many
    bytes of cache per message. So a small message is decoded with a reused one, which is left
    clean by a successful decode (every byte consumed). Only success is taken from it: on any
    fault it is dropped and :func:`_decode_reference`, with an Unpacker sized to the message as
    before, decodes the message again and raises exactly what it always raised. (Its limits on
    string, array and map lengths are the message's own size, so they can only refuse what the
    reused one, which runs out of bytes instead, refuses too.)
    """
    if len(message) <= _REUSE_LIMIT:
        try:
            unpacker = _SPARE_UNPACKERS.pop()
        except IndexError:
            unpacker = msgpack.Unpacker(max_buffer_size=_REUSE_LIMIT, read_size=4096)
        try:
            base = unpacker.tell()
            unpacker.feed(message)
            decoded = _decode_items(unpacker, base, len(message), max_frame_size)
        except Exception:  # noqa: BLE001 - any fault: the reference decoder reports it
            pass
        else:
            _SPARE_UNPACKERS.append(unpacker)
            return decoded
    return _decode_reference(message, max_frame_size)


def _decode_reference(message: bytes, max_frame_size: int) -> list[WireFrame]:
    # msgpack's defaults are the strict decoding the tunnel needs: raw=False (strings must be
    # UTF-8), use_list=True, strict_map_key=True (map keys must be strings). The reused
    # Unpacker relies on them too; the tests of bad input pin each of them down.
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(message), 1))
    unpacker.feed(message)
    try:
        return _decode_items(unpacker, 0, len(message), max_frame_size)
    except RemoteProtocolError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"malformed msgpack: {type(exc).__name__} {exc}") from None


def _decode_items(
    unpacker: msgpack.Unpacker, base: int, size: int, max_frame_size: int
) -> list[WireFrame]:
    """The frames of the ``size`` bytes just fed to ``unpacker``, whose position was ``base``.
    msgpack's faults propagate as msgpack raised them."""
    limit = max_frame_size + FRAME_OVERHEAD
    decoded: list[WireFrame] = []
    offset = base
    parsers = _PARSERS
    for item in unpacker:
        # The position after each whole frame: msgpack's position also counts the bytes of a
        # frame cut short at the end, so it cannot be read once after the loop instead.
        end = unpacker.tell()
        if end - offset > limit:
            raise FrameTooLargeError(f"frame of {end - offset} bytes exceeds {limit}")
        offset = end
        # The envelope checks, inlined: this runs for every frame that is not a canonical
        # DATA, two or three per proxied request on each side.
        if type(item) is not list or len(item) < 2:
            raise RemoteProtocolError("a frame must be an array of at least two elements")
        kind = item[0]
        stream_id = item[1]
        if type(kind) is not int:
            raise RemoteProtocolError("frame type must be an integer")
        if type(stream_id) is not int:
            raise RemoteProtocolError("stream id must be an integer")
        if not 0 <= stream_id <= _MAX_ID:
            raise RemoteProtocolError(f"stream id {stream_id} out of range")
        # A plain int key: FrameType is an IntEnum, and calling the enum costs a Python-level
        # lookup per frame.
        entry = parsers.get(kind)
        if entry is None:
            raise RemoteProtocolError(f"unknown frame type {kind}")
        if len(item) != entry[0]:
            raise RemoteProtocolError(f"{FrameType(kind).name} frame has {len(item)} elements")
        decoded.append(entry[1](stream_id, item, max_frame_size))
    if offset - base != size:
        raise RemoteProtocolError("truncated frame at the end of the message")
    if not decoded:
        raise RemoteProtocolError("empty message")
    return decoded


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise RemoteProtocolError(f"{what} must be an integer")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise RemoteProtocolError(f"{what} must be a string")
    return value


def _metadata(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise RemoteProtocolError("metadata must be a map")
    return value


def _headers(value: Any) -> frames.Headers:
    if type(value) is not list:
        raise RemoteProtocolError("headers must be an array")
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise RemoteProtocolError("a header must be a [name, value] pair")
        if type(pair[0]) is not str:
            raise RemoteProtocolError("header name must be a string")
        if type(pair[1]) is not str:
            raise RemoteProtocolError("header value must be a string")
    # Every pair checked above: one C-level pass builds the tuples.
    return tuple(map(tuple, value))


def _session_only(stream_id: int, frame_type: FrameType) -> None:
    if stream_id != 0:
        raise RemoteProtocolError(f"{frame_type.name} must use stream id 0")


def _stream_only(stream_id: int, frame_type: FrameType) -> None:
    if stream_id == 0:
        raise RemoteProtocolError(f"{frame_type.name} must not use stream id 0")


# Each parser gets the array msgpack decoded (a list of its own, already checked to have the
# right length) and returns it as a WireFrame, converted in place where a field needs it.


def _parse_hello(stream_id: int, item: list[Any], _: int) -> WireFrame:
    _session_only(stream_id, FrameType.HELLO)
    _metadata(item[2])
    return item


def _parse_open(stream_id: int, item: list[Any], _: int) -> WireFrame:
    if stream_id == 0:
        raise RemoteProtocolError("OPEN must not use stream id 0")
    kind, head, metadata = item[2], item[3], item[4]
    if type(head) is not dict:
        raise RemoteProtocolError("OPEN target must be a map")
    target: frames.Target
    if type(kind) is str and kind == "http":
        method = head.get("method")
        if type(method) is not str:
            raise RemoteProtocolError("method must be a string")
        path = head.get("path")
        if type(path) is not str:
            raise RemoteProtocolError("path must be a string")
        target = frames.HttpRequestHead(method, path, _headers(head.get("headers", [])))
    elif type(kind) is str and kind == "dial":
        target = frames.DialTarget(
            _str(head.get("network"), "network"), _str(head.get("address"), "address")
        )
    else:
        raise RemoteProtocolError(f"unknown OPEN kind {kind!r}")
    if type(metadata) is not dict:
        raise RemoteProtocolError("metadata must be a map")
    return [FrameType.OPEN, stream_id, target, metadata]


def _parse_headers(stream_id: int, item: list[Any], _: int) -> WireFrame:
    if stream_id == 0:
        raise RemoteProtocolError("HEADERS must not use stream id 0")
    status = item[2]
    if type(status) is not int:
        raise RemoteProtocolError("status must be an integer")
    if not 100 <= status <= 999:
        raise RemoteProtocolError(f"status {status} out of range")
    if type(item[4]) is not dict:
        raise RemoteProtocolError("metadata must be a map")
    item[3] = _headers(item[3])
    return item


def _parse_data(stream_id: int, item: list[Any], max_frame_size: int) -> WireFrame:
    _stream_only(stream_id, FrameType.DATA)
    data = item[2]
    if type(data) is not bytes:
        raise RemoteProtocolError("DATA payload must be binary")
    if len(data) > max_frame_size:
        raise FrameTooLargeError(f"DATA of {len(data)} bytes exceeds {max_frame_size}")
    return item


def _parse_window_update(stream_id: int, item: list[Any], _: int) -> WireFrame:
    increment = _int(item[2], "window increment")
    if not 1 <= increment <= _MAX_INCREMENT:
        raise RemoteProtocolError(f"window increment {increment} out of range")
    return item


def _parse_end(stream_id: int, item: list[Any], _: int) -> WireFrame:
    if stream_id == 0:
        raise RemoteProtocolError("END must not use stream id 0")
    return item


def _parse_reset(stream_id: int, item: list[Any], _: int) -> WireFrame:
    _stream_only(stream_id, FrameType.RESET)
    _int(item[2], "code")
    _str(item[3], "reason")
    return item


def _parse_ping(stream_id: int, item: list[Any], _: int) -> WireFrame:
    _session_only(stream_id, FrameType.PING)
    _int(item[2], "opaque")
    return item


def _parse_pong(stream_id: int, item: list[Any], _: int) -> WireFrame:
    _session_only(stream_id, FrameType.PONG)
    _int(item[2], "opaque")
    return item


def _parse_goaway(stream_id: int, item: list[Any], _: int) -> WireFrame:
    _session_only(stream_id, FrameType.GOAWAY)
    last = _int(item[2], "last stream id")
    if not 0 <= last <= _MAX_ID:
        raise RemoteProtocolError("last stream id out of range")
    _int(item[3], "code")
    _str(item[4], "reason")
    return item


_Parser = Callable[[int, list[Any], int], WireFrame]
#: Per frame type: the length of its array (type and stream id included), and the parser.
#: Keyed by the wire integer (FrameType members are equal to and hash as their ints).
_PARSERS: dict[int, tuple[int, _Parser]] = {
    FrameType.HELLO: (3, _parse_hello),
    FrameType.OPEN: (5, _parse_open),
    FrameType.HEADERS: (5, _parse_headers),
    FrameType.DATA: (3, _parse_data),
    FrameType.WINDOW_UPDATE: (3, _parse_window_update),
    FrameType.END: (2, _parse_end),
    FrameType.RESET: (4, _parse_reset),
    FrameType.PING: (3, _parse_ping),
    FrameType.PONG: (3, _parse_pong),
    FrameType.GOAWAY: (5, _parse_goaway),
}

#: Per frame type: its class, and where its fields start in a WireFrame (after the stream id
#: placeholder for session frames).
_FRAME_CLASSES: dict[int, tuple[type[Any], int]] = {
    FrameType.HELLO: (frames.Hello, 2),
    FrameType.OPEN: (frames.Open, 1),
    FrameType.HEADERS: (frames.ResponseHeaders, 1),
    FrameType.DATA: (frames.Data, 1),
    FrameType.WINDOW_UPDATE: (frames.WindowUpdate, 1),
    FrameType.END: (frames.End, 1),
    FrameType.RESET: (frames.Reset, 1),
    FrameType.PING: (frames.Ping, 2),
    FrameType.PONG: (frames.Pong, 2),
    FrameType.GOAWAY: (frames.GoAway, 2),
}
