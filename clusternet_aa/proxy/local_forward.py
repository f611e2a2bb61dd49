"""Hub side of raw byte streams: a local TCP port whose connections cross the tunnel.

Each accepted connection becomes one DialTarget stream on a session and is relayed both ways,
like ``ssh -L``. The demo and the benchmarks use it; the HTTP proxy does not (it opens L7
streams instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from clusternet_aa.tunnel import relay
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import TunnelError
from clusternet_aa.tunnel.session import Session

logger = logging.getLogger(__name__)


async def serve_forward(
    session_for: Callable[[], Session | None],
    target: frames.DialTarget,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
) -> asyncio.Server:
    """Listen on ``host:port``; connections go to ``target`` through the current session."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = session_for()
        stream = None
        if session is not None and not session.is_closed:
            try:
                stream = await session.open_stream(target)
                await stream.response()
            except TunnelError as exc:
                logger.info("forward to %s failed: %s", target.address, exc)
                stream = None
        if stream is None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        await relay.relay(stream, reader, writer)

    return await asyncio.start_server(on_connect, host, port)
