"""The SPDY/3.1 framing kubectl's port-forward speaks inside its WebSocket tunnel.

kubectl 1.31+ opens ``pods/portforward`` as a WebSocket with subprotocol
``SPDY/3.1+portforward.k8s.io`` and then runs an unmodified SPDY/3 session (moby/spdystream)
over the WebSocket as a byte pipe: frames are split across messages at arbitrary points, so the
parser buffers a byte stream instead of parsing messages. Only what the port-forward protocol uses
is implemented: SYN_STREAM/SYN_REPLY, DATA with FIN, RST_STREAM, PING and GOAWAY. Header blocks
are zlib-compressed with one stream per direction for the whole session, primed with the SPDY/3
dictionary (draft 3, section 2.6.10.1).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

VERSION = 3
SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9
FLAG_FIN = 0x01
#: RST_STREAM status codes used here.
RST_PROTOCOL_ERROR = 1
RST_REFUSED_STREAM = 3
RST_CANCEL = 5

_DICTIONARY_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, "
    "Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
#: The 1423-byte zlib dictionary of SPDY/3 header blocks: length-prefixed words, then raw text.
DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS)
    + _DICTIONARY_TAIL.encode()
)


class SpdyError(Exception):
    """The peer sent something that is not SPDY/3 (the session is dropped)."""


@dataclass(frozen=True)
class ControlFrame:
    type: int
    flags: int
    payload: bytes


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    flags: int
    data: bytes

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


Frame = ControlFrame | DataFrame


class FrameParser:
    """Turns a byte stream, fed in pieces of any size, into frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < 8 + length:
                break
            head = bytes(self._buffer[:8])
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = head[4]
            if head[0] & 0x80:
                version = int.from_bytes(head[0:2], "big") & 0x7FFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frames.append(ControlFrame(int.from_bytes(head[2:4], "big"), flags, payload))
            else:
                stream_id = int.from_bytes(head[0:4], "big") & 0x7FFFFFFF
                frames.append(DataFrame(stream_id, flags, payload))
        return frames


def control(frame_type: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def data(stream_id: int, payload: bytes = b"", *, fin: bool = False) -> bytes:
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(payload)) + payload


def stream_id_of(payload: bytes) -> int:
    """The stream id that SYN_STREAM, SYN_REPLY, RST_STREAM and HEADERS payloads start with."""
    if len(payload) < 4:
        raise SpdyError("control frame too short")
    return int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF


def rst_stream(stream_id: int, status: int) -> bytes:
    return control(RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF, status))


class HeaderCodec:
    """The session's two zlib streams: one inflating the peer's blocks, one deflating ours."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def decode(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block)
        except zlib.error as e:
            raise SpdyError(f"bad header block: {e}") from None
        try:
            (count,) = struct.unpack_from(">I", raw, 0)
            offset = 4
            headers: dict[str, str] = {}
            for _ in range(count):
                (size,) = struct.unpack_from(">I", raw, offset)
                name = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                (size,) = struct.unpack_from(">I", raw, offset)
                value = raw[offset + 4 : offset + 4 + size].decode()
                offset += 4 + size
                headers[name] = value
        except (struct.error, UnicodeDecodeError) as e:
            raise SpdyError(f"bad header block: {e}") from None
        return headers

    def encode(self, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers))
        for name, value in headers.items():
            key, val = name.lower().encode(), value.encode()
            block += struct.pack(">I", len(key)) + key + struct.pack(">I", len(val)) + val
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None) -> bytes:
        return control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self.encode(headers or {}))

    def syn_stream_headers(self, payload: bytes) -> dict[str, str]:
        """The headers of a SYN_STREAM payload (after id, associated id, priority, slot)."""
        if len(payload) < 10:
            raise SpdyError("SYN_STREAM too short")
        return self.decode(payload[10:])
