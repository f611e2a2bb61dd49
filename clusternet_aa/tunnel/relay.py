"""Copy bytes between a tunnel stream and an asyncio socket, both ways, with half-close.

Used wherever a raw byte stream crosses the tunnel (dial targets, local port forwards). Each
direction ends on its own: end-of-file on one side becomes a half-close on the other, so
protocols that half-close (TLS close_notify, HTTP/1.0, tar over exec) still work. An error on
either side tears down both: the socket is closed and the stream reset.
"""

from __future__ import annotations

import asyncio
import contextlib

from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream

#: Bytes read from the socket per write to the stream (one full DATA frame).
CHUNK = 64 * 1024


async def socket_to_stream(reader: asyncio.StreamReader, stream: TunnelStream) -> None:
    while chunk := await reader.read(CHUNK):
        stream.write(chunk)
        await stream.drain()
    stream.write_eof()


async def stream_to_socket(stream: TunnelStream, writer: asyncio.StreamWriter) -> None:
    while chunk := await stream.read():
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def relay(
    stream: TunnelStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Relay until both directions finished or one failed; always closes the socket."""
    up = asyncio.ensure_future(socket_to_stream(reader, stream))
    down = asyncio.ensure_future(stream_to_socket(stream, writer))
    try:
        pending: set[asyncio.Future[None]] = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
    except (OSError, StreamResetError):
        stream.reset(ErrorCode.CANCEL, "relay peer failed")
    finally:
        for task in (up, down):
            task.cancel()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
