"""Credit and window arithmetic, on its own."""

from __future__ import annotations

import pytest

from clusternet_aa.tunnel.protocol.errors import ErrorCode, FlowControlError
from clusternet_aa.tunnel.protocol.windows import MAX_WINDOW, ReceiveWindow, SendCredit


def test_send_credit_consumes_and_grants() -> None:
    credit = SendCredit(100)
    credit.consume(40)
    assert credit.available == 60
    credit.consume(60)
    assert credit.available == 0
    credit.grant(5)
    assert credit.available == 5


def test_send_credit_starts_empty_by_default() -> None:
    assert SendCredit().available == 0


def test_sending_beyond_credit_is_our_bug() -> None:
    credit = SendCredit(10)
    with pytest.raises(ValueError, match="only 10"):
        credit.consume(11)
    assert credit.available == 10


def test_grant_up_to_the_maximum_is_fine_beyond_is_a_flow_control_error() -> None:
    credit = SendCredit(MAX_WINDOW - 10)
    credit.grant(10)
    assert credit.available == MAX_WINDOW
    with pytest.raises(FlowControlError) as info:
        credit.grant(1, stream_id=9)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    assert info.value.stream_id == 9
    assert credit.available == MAX_WINDOW


def test_session_overflow_carries_stream_zero() -> None:
    with pytest.raises(FlowControlError) as info:
        SendCredit(MAX_WINDOW).grant(1)
    assert info.value.stream_id == 0


def test_receive_window_accepts_up_to_its_size() -> None:
    window = ReceiveWindow(100)
    window.receive(60)
    window.receive(40)
    assert window.remaining == 0
    with pytest.raises(FlowControlError) as info:
        window.receive(1, stream_id=3)
    assert info.value.stream_id == 3
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    assert window.remaining == 0


def test_receive_of_zero_bytes_always_fits() -> None:
    window = ReceiveWindow(1)
    window.receive(1)
    window.receive(0)
    assert window.remaining == 0


def test_updates_are_batched_to_a_quarter_of_the_window() -> None:
    window = ReceiveWindow(400)
    window.receive(300)
    assert window.consumed(50) == 0
    assert window.consumed(49) == 0
    assert window.consumed(1) == 100  # reaches 400 // 4
    assert window.remaining == 200
    assert window.consumed(0) == 0
    assert window.consumed(-5) == 0


def test_an_exhausted_window_returns_credit_at_once() -> None:
    """If the sender has no credit left, waiting for a quarter could deadlock: send now."""
    window = ReceiveWindow(400)
    window.receive(400)
    assert window.consumed(1) == 1
    assert window.remaining == 1


def test_credit_never_exceeds_the_window() -> None:
    """A consumer that over-acknowledges cannot inflate the peer's credit."""
    window = ReceiveWindow(100)
    window.receive(30)
    assert window.consumed(1000) == 30
    assert window.remaining == 100
    assert window.consumed(1000) == 0
    assert window.remaining == 100
