"""The request-head builder of the HTTP/2 listener: its caches never let a header skip a check.

Names and values are remembered between requests (shared strings for idle watches, and a
"checked already" shortcut): a value seen before must not count as a valid *name*, and ``te``
must be checked every time, since its rule is about the value.
"""

from __future__ import annotations

import pytest

from clusternet_aa.apiserver import http2_headers
from clusternet_aa.apiserver.http2_headers import MalformedRequest, request_message

HEAD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"hub"), (b":path", b"/x")]


def test_a_value_seen_before_is_still_checked_as_a_name() -> None:
    message, _ = request_message([*HEAD, (b"x-user", b"Alice")], ended=True)
    assert message is not None
    assert message.headers["x-user"] == "Alice"
    assert b"Alice" in http2_headers._VALUES
    with pytest.raises(MalformedRequest):
        request_message([*HEAD, (b"Alice", b"1")], ended=True)


def test_te_is_checked_on_every_request() -> None:
    request_message([*HEAD, (b"te", b"trailers")], ended=True)
    assert b"te" not in http2_headers._NAMES
    with pytest.raises(MalformedRequest):
        request_message([*HEAD, (b"te", b"gzip")], ended=True)


def test_connection_specific_names_are_never_remembered() -> None:
    for name in (b"connection", b"transfer-encoding", b"upgrade"):
        with pytest.raises(MalformedRequest):
            request_message([*HEAD, (name, b"x")], ended=True)
        assert name not in http2_headers._NAMES


def test_the_caches_are_bounded() -> None:
    for i in range(http2_headers._SHARED_MAX_ENTRIES + 10):
        request_message([*HEAD, (f"x-n{i}".encode(), f"v{i}".encode())], ended=True)
    assert len(http2_headers._NAMES) <= http2_headers._SHARED_MAX_ENTRIES
    assert len(http2_headers._VALUES) <= http2_headers._SHARED_MAX_ENTRIES
    long_value = b"v" * (http2_headers._SHARED_MAX_LENGTH + 1)
    request_message([*HEAD, (b"x-long", long_value)], ended=True)
    assert long_value not in http2_headers._VALUES


def test_the_request_head_aiohttp_gets() -> None:
    message, problem = request_message(
        [*HEAD[:3], (b":path", b"/a/b?watch=true"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
        ended=False,
    )
    assert problem is None
    assert message is not None
    assert message.method == "GET"
    assert message.path == "/a/b?watch=true"
    assert message.url.path == "/a/b"
    assert message.url.query_string == "watch=true"
    assert message.headers["Host"] == "hub"
    assert message.headers["Cookie"] == "a=1; b=2"
    assert (b"cookie", b"a=1; b=2") in message.raw_headers
    assert message.version == http2_headers.HTTP2
