"""HTTP/2 request header blocks to aiohttp request heads, validated in the same single pass.

Why here and not in ``h2``: h2's inbound validation (``validate_inbound_headers``) is a chain
of seven generators over every header of every request, plus its cookie normalisation; on the
hub's proxied small GET that cost more CPU than building the aiohttp request from the same
list. The hub turns both off in h2 and checks here, while it walks the list anyway, everything
h2 checked that could let a request be read differently by the hub and by what is behind it
(RFC 9113 8.2 and 8.3):

* names: non-empty, lower case, RFC 9110 token characters (so no colon, space or control);
* values: no NUL, CR or LF, no leading or trailing space or tab;
* connection-specific fields (``connection``, ``keep-alive``, ``proxy-connection``,
  ``transfer-encoding``, ``upgrade``) and ``te`` other than ``trailers``;
* pseudo-headers: only the five request ones, each at most once, all before the first
  regular field; ``:method`` always, ``:scheme`` and a non-empty ``:path`` unless CONNECT;
  ``:protocol`` only with CONNECT;
* ``:authority`` or ``host`` present, equal if both, ``host`` at most once;
* a request that ends with its HEADERS but announces a non-zero ``content-length``.

A request failing any of these is malformed: :class:`MalformedRequest`, which the listener
answers with RST_STREAM(PROTOCOL_ERROR), a stream error as RFC 9113 8.1.1 asks (h2 made every
one a connection error, which on an aggregator's connection would also end every watch it
multiplexes). Content-length against the DATA received stays h2's check (``h2.stream``
tracks it whatever the validation options), as does HPACK and frame-level validity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from aiohttp.http import HttpVersion, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from clusternet_aa.apiserver.status import StatusError

#: The version requests carry on HTTP/2; aiohttp only compares it with 1.0 and 1.1.
HTTP2 = HttpVersion(2, 0)

#: RFC 9110 token characters, lower case only (RFC 9113 8.2.1: upper case is malformed).
_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
#: A field value (RFC 9113 8.2.1): no NUL, CR, LF; no space or tab at either end; may be empty.
_VALUE = re.compile(rb"(?:[^\x00\r\n \t](?:[^\x00\r\n]*[^\x00\r\n \t])?)?")
#: :method is a token; :path an origin-form target: no space or control anywhere.
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[^\x00-\x20\x7f]*")
#: RFC 9113 8.2.2: these mean something to one HTTP/1.1 connection only.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class MalformedRequest(ValueError):
    """A request header block RFC 9113 calls malformed: a stream error (PROTOCOL_ERROR)."""


#: Header names and short values seen recently, as (bytes, str) to share between requests: an
#: idle watch keeps its request headers for hours, and thousands of watches from one
#: aggregator repeat the same names and mostly the same values. An entry also means "already
#: checked": names in ``_NAMES`` passed the name rules (and are neither connection-specific
#: nor ``te``), values in ``_VALUES`` the value rule. Each is cleared when full, so junk
#: cannot pin it.
_NAMES: dict[bytes, tuple[bytes, str]] = {}
_VALUES: dict[bytes, tuple[bytes, str]] = {}
_SHARED_MAX_ENTRIES = 4096
_SHARED_MAX_LENGTH = 128


def _remember(table: dict[bytes, tuple[bytes, str]], data: bytes) -> tuple[bytes, str]:
    """``data`` and its text (UTF-8, undecodable bytes kept as surrogates, as aiohttp does),
    kept in ``table`` for the next request when short."""
    pair = (data, data.decode("utf-8", "surrogateescape"))
    if len(data) <= _SHARED_MAX_LENGTH:
        if len(table) >= _SHARED_MAX_ENTRIES:
            table.clear()
        table[data] = pair
    return pair


def _name(name: bytes, value: bytes) -> tuple[bytes, str]:
    """A regular field's name, checked (the value only where the name rules it: ``te``)."""
    if _NAME.fullmatch(name) is None:
        raise MalformedRequest(f"field name {name!r} is not a lower-case token")
    if name in _CONNECTION_SPECIFIC:
        raise MalformedRequest(f"connection-specific field {name.decode()!r}")
    if name == b"te":
        if value.lower() != b"trailers":
            raise MalformedRequest(f"te: {value!r}")
        return name, "te"
    return _remember(_NAMES, name)


def _pseudo(value: bytes, pattern: re.Pattern[bytes], name: str) -> bytes:
    if pattern.fullmatch(value) is None:
        raise MalformedRequest(f"invalid {name}: {value!r}")
    return value


def request_message(
    headers: Iterable[tuple[bytes, bytes]], *, ended: bool
) -> tuple[RawRequestMessage | None, StatusError | None]:
    """The aiohttp request head for an HTTP/2 header list, or the Status to answer instead
    (an upgrade, a path that is not origin-form). ``ended``: the HEADERS frame ended the
    stream (no body follows). Raises :class:`MalformedRequest`."""
    method = path = authority = scheme = protocol = host = None
    regular = False
    fields: CIMultiDict[str] = CIMultiDict()
    raw: list[tuple[bytes, bytes]] = []
    cookies: list[str] = []
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular field")
            if name == b":method" and method is None:
                method = _pseudo(value, _METHOD, ":method")
            elif name == b":path" and path is None:
                path = _pseudo(value, _TARGET, ":path")
            elif name == b":authority" and authority is None:
                authority = _pseudo(value, _VALUE, ":authority")
            elif name == b":scheme" and scheme is None:
                scheme = _pseudo(value, _METHOD, ":scheme")
            elif name == b":protocol" and protocol is None:
                protocol = _pseudo(value, _VALUE, ":protocol")
            else:
                raise MalformedRequest(f"pseudo-header {name!r} repeated or not a request's")
            continue
        regular = True
        shared_value = _VALUES.get(value)
        if shared_value is None:
            if _VALUE.fullmatch(value) is None:
                raise MalformedRequest(f"field {name!r} has an invalid value")
            shared_value = _remember(_VALUES, value)
        value, text = shared_value
        if name == b"cookie":  # split cookie fields are joined again (RFC 9113 8.2.3)
            cookies.append(text)
            continue
        shared_name = _NAMES.get(name)
        if shared_name is None:
            shared_name = _name(name, value)
        name, key = shared_name
        if name == b"host":
            if host is not None:
                raise MalformedRequest("more than one host field")
            host = value
        elif ended and name == b"content-length" and value != b"0":
            raise MalformedRequest("content-length without a body")
        fields.add(key, text)
        raw.append((name, value))
    if method is None:
        raise MalformedRequest("no :method")
    connect = method == b"CONNECT"
    if protocol is not None and not connect:
        raise MalformedRequest(":protocol without CONNECT")
    if connect and protocol is None:
        if scheme is not None or path is not None:
            raise MalformedRequest("CONNECT with :scheme or :path")
    elif scheme is None or not path:
        raise MalformedRequest("no :scheme or no :path")
    if authority is None and host is None:
        raise MalformedRequest("neither :authority nor host")
    if authority is not None and host is not None and authority != host:
        raise MalformedRequest(":authority and host differ")
    if cookies:
        joined = "; ".join(cookies)
        fields.add("Cookie", joined)
        raw.append((b"cookie", joined.encode("utf-8", "surrogateescape")))
    if connect:
        return None, StatusError(
            405,
            "upgrades (exec, attach, port-forward, the agents' tunnel) need HTTP/1.1; "
            "this HTTP/2 connection cannot carry them",
        )
    assert path is not None  # checked above: mypy cannot follow the elif
    if not path.startswith(b"/"):
        return None, StatusError(400, "the request path must start with /")
    if authority and host is None:
        fields.add("Host", authority.decode("utf-8", "surrogateescape"))
        raw.append((b"host", authority))
    target = path.decode("utf-8", "surrogateescape")
    route, _, query = target.partition("?")
    url = URL.build(path=route, query_string=query, encoded=True)
    message = RawRequestMessage(
        method.decode("ascii", "surrogateescape"),
        target,
        HTTP2,
        CIMultiDictProxy(fields),
        tuple(raw),
        False,
        None,
        False,
        False,
        url,
    )
    return message, None


#: Request heads built recently, by their header list and whether the HEADERS frame ended the
#: stream: a client repeating a request (the aggregator's proxied calls, kubectl's polls, the
#: benchmark) sends the same list each time, and building and checking the head again cost
#: about 13 µs of CPU per request. The head is immutable (a ``CIMultiDictProxy``, tuples, a
#: ``URL``), so requests can share it. Only heads that passed every check and go to the
#: application are kept; bounded in entries and in the bytes of each list, cleared when full,
#: so junk cannot pin memory.
_HEADS: dict[tuple[bool, tuple[tuple[bytes, bytes], ...]], RawRequestMessage] = {}
_HEADS_MAX_ENTRIES = 256
_HEAD_MAX_BYTES = 4096


def cached_request_message(
    headers: Iterable[tuple[bytes, bytes]], *, ended: bool
) -> tuple[RawRequestMessage | None, StatusError | None]:
    """:func:`request_message`, with the head of a header list seen recently reused (the same
    result, and the same :class:`MalformedRequest`, as building it again)."""
    key = (ended, tuple(headers))
    message = _HEADS.get(key)
    if message is not None:
        return message, None
    message, problem = request_message(key[1], ended=ended)
    if message is not None and sum(len(n) + len(v) for n, v in key[1]) <= _HEAD_MAX_BYTES:
        if len(_HEADS) >= _HEADS_MAX_ENTRIES:
            _HEADS.clear()
        _HEADS[key] = message
    return message, problem
