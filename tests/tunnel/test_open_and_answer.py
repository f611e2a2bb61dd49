"""Opening a stream with its end, and answering in one call: the same frames as the separate
calls, in one message, without a flush scheduled and cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.connection import Role
from clusternet_aa.tunnel.protocol.errors import ErrorCode, StreamClosedError
from clusternet_aa.tunnel.session import Session
from clusternet_aa.tunnel.streams import StreamResetError, TunnelStream
from clusternet_aa.tunnel.transport import memory_pair

GET = frames.HttpRequestHead("GET", "/api", (("accept", "application/json"),))
seen: list[tuple[bool, int]] = []


async def answering(stream: TunnelStream) -> None:
    # What the agent's child client does with a complete small answer.
    seen.append((stream.at_eof, stream.buffered))
    stream.answer(200, (("content-type", "text/plain"),), {"n": 1}, [b"hello ", b"world"])


@pytest.fixture
async def sessions() -> AsyncIterator[tuple[Session, Session]]:
    seen.clear()
    a, b = memory_pair()
    agent = Session(a, Role.CLIENT, handler=answering, name="agent")
    hub = Session(b, Role.SERVER, name="hub")
    agent.start()
    hub.start()
    await hub.wait_ready()
    yield agent, hub
    for session in (agent, hub):
        await session.close(ErrorCode.CANCEL, "test over", grace=1)


async def test_a_stream_opened_with_its_end_goes_out_as_one_message(sessions) -> None:
    agent, hub = sessions
    sent, received = hub.stats.messages_out, agent.stats.messages_in
    stream = await hub.open_stream(GET, {"user": "alice"}, end=True)
    head = await stream.take_response()
    assert head.status == 200
    assert head.headers == (("content-type", "text/plain"),)
    assert head.metadata == {"n": 1}
    assert b"".join([chunk async for chunk in stream]) == b"hello world"
    # The agent saw the request's end with its OPEN, before its handler ran.
    assert seen == [(True, 0)]
    assert agent.stats.messages_in - received == 1  # OPEN and END together
    assert hub.stats.messages_out - sent == 1
    stream.write_eof()  # already ended: nothing more to send, no error
    with pytest.raises(StreamClosedError):
        stream.write(b"late")


async def test_an_answer_in_one_call_is_one_message(sessions) -> None:
    agent, hub = sessions
    answered = agent.stats.messages_out
    stream = await hub.open_stream(GET, end=True)
    await stream.take_response()
    assert b"".join([chunk async for chunk in stream]) == b"hello world"
    assert agent.stats.messages_out - answered == 1  # HEADERS, both DATA and END together
    # Nothing scheduled was left behind: the loop has no pending flush of either session.
    assert agent._flush_handle is None
    assert hub._flush_handle is None


async def test_answer_refuses_a_stream_already_ended_or_reset(sessions) -> None:
    agent, hub = sessions
    answered = asyncio.get_running_loop().create_future()

    async def handler(stream: TunnelStream) -> None:
        try:
            if stream.target.path == "/ended":  # type: ignore[union-attr]
                stream.send_headers(204)
                stream.write_eof()
                with pytest.raises(StreamClosedError):
                    stream.answer(200)
            else:
                stream.reset(ErrorCode.CANCEL, "changed my mind")
                with pytest.raises(StreamResetError):
                    stream.answer(200)
        except BaseException as exc:  # the test fails on it, not the session
            answered.set_exception(exc)
            raise
        if not answered.done():
            answered.set_result(True)

    agent._handler = handler
    ended = await hub.open_stream(frames.HttpRequestHead("GET", "/ended"), end=True)
    assert (await ended.take_response()).status == 204
    assert b"".join([chunk async for chunk in ended]) == b""
    assert await answered
    answered = asyncio.get_running_loop().create_future()
    refused = await hub.open_stream(GET, end=True)
    with pytest.raises(StreamResetError):
        await refused.take_response()
    assert await answered
