"""The response head's waiters: one future per caller, resolved by the session directly (no
shield), with the semantics of the shared future they replaced."""

from __future__ import annotations

import asyncio

import pytest

from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import ResponseHead, StreamResetError, TunnelStream


class _Loop:
    """Stands in for the session: the stream needs only its loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()


def new_stream() -> TunnelStream:
    return TunnelStream(
        _Loop(),  # type: ignore[arg-type]
        1,
        target=frames.DialTarget("tcp", "127.0.0.1:1"),
        metadata={},
    )


async def test_every_waiter_gets_the_head_even_when_one_takes_it() -> None:
    stream = new_stream()
    first = asyncio.ensure_future(stream.take_response())
    second = asyncio.ensure_future(stream.response())
    await asyncio.sleep(0)
    head = ResponseHead(200, (("a", "b"),), {"k": 1})
    stream._set_response(head)
    assert await first is head
    assert await second is head  # woken with the head before the first took it
    assert stream._head_waiters is None
    with pytest.raises(RuntimeError, match="taken"):
        await stream.response()


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    stream = new_stream()
    cancelled = asyncio.ensure_future(stream.response())
    waiting = asyncio.ensure_future(stream.response())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert cancelled.cancelled()
    assert not waiting.done()
    head = ResponseHead(204)
    stream._set_response(head)
    assert await waiting is head
    assert await stream.response() is head  # and it stays for later callers
    assert stream._head_waiters is None


async def test_a_reset_fails_the_waiters_and_later_calls() -> None:
    stream = new_stream()
    waiters = [asyncio.ensure_future(stream.response()) for _ in range(2)]
    await asyncio.sleep(0)
    error = StreamResetError(ErrorCode.REFUSED_STREAM, "no", remote=True)
    stream._fail(error)
    for waiter in waiters:
        with pytest.raises(StreamResetError) as caught:
            await waiter
        assert caught.value is error
    stream._fail(StreamResetError(ErrorCode.CANCEL, "later", remote=False))
    with pytest.raises(StreamResetError) as caught:
        await stream.take_response()
    assert caught.value is error  # the first error stays the answer
    stream._set_response(ResponseHead(200))  # a head after the reset changes nothing
    with pytest.raises(StreamResetError):
        await stream.response()


async def test_a_head_before_the_reset_stays_readable() -> None:
    stream = new_stream()
    head = ResponseHead(200)
    stream._set_response(head)
    stream._set_response(ResponseHead(500))  # only the first head counts
    stream._fail(StreamResetError(ErrorCode.CANCEL, "gone", remote=False))
    assert await stream.response() is head
    assert await stream.take_response() is head


async def test_response_head_is_a_frozen_dataclass_as_before() -> None:
    head = ResponseHead(200)
    assert head.headers == ()
    assert head.metadata == {}
    assert ResponseHead(200).metadata is not head.metadata  # a fresh dict each
    assert head == ResponseHead(200, (), {})
    assert repr(head) == "ResponseHead(status=200, headers=(), metadata={})"
    with pytest.raises(AttributeError):
        head.status = 500  # type: ignore[misc]
    full = ResponseHead(status=201, headers=(("x", "y"),), metadata={"n": 1})
    assert (full.status, full.headers, full.metadata) == (201, (("x", "y"),), {"n": 1})
