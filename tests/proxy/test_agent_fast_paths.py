"""The per-request shortcuts of the agent's proxy path (and the hub's header filter) give the
answers of the long way, however often and in whatever order they are asked."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from clusternet_aa.identity import METADATA_KEY, UserInfo
from clusternet_aa.proxy import child_client
from clusternet_aa.proxy import headers as hop
from clusternet_aa.proxy.child_client import CONTENT_LENGTH_KEY, ChildClient, Origin, _Connection
from clusternet_aa.proxy.executor import (
    _LINE_BREAKERS,
    _METHOD,
    BODY_KEY,
    TARGET_KEY,
    UPGRADE_KEY,
    ChildApiserver,
    Executor,
    _check_request_line,
)
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from tests.proxy.test_child_client import RecordingStream

NAMES = [
    "Accept",
    "accept",
    "User-Agent",
    "Authorization",
    "AUTHORIZATION",
    "Host",
    "Connection",
    "connection",
    "Upgrade",
    "Keep-Alive",
    "Transfer-Encoding",
    "TE",
    "Impersonate-User",
    "impersonate-group",
    "X-Remote-User",
    "x-remote-extra-scopes",
    "X-Custom-User",
    "X-Custom-Extra-Team",
    "X-Other",
    "Audit-Id",
    "A" * 100,
]
CONFIGURATIONS: list[tuple[frozenset[str], tuple[str, ...]]] = [
    (frozenset(), ()),
    (frozenset({"authorization", "x-custom-user"}), ("x-custom-extra-",)),
    (frozenset({"x-other"}), ()),
    (frozenset(), ("",)),  # an empty prefix: every name is a credential
]


def _long_way(
    headers: list[tuple[str, str]], drop: frozenset[str], prefixes: tuple[str, ...]
) -> tuple[frames.Headers, bool]:
    upgrade = hop.is_upgrade(headers)
    forwarded = hop.forwardable_request_headers(headers, upgrade=upgrade)
    return tuple(
        (name, value)
        for name, value in forwarded
        if name.lower() not in drop and not name.lower().startswith(prefixes)
    ), upgrade


@pytest.mark.parametrize(("drop", "prefixes"), CONFIGURATIONS)
def test_request_header_verdicts_are_those_of_the_long_way(
    drop: frozenset[str], prefixes: tuple[str, ...]
) -> None:
    for rounds in range(2):  # the second round answers from the remembered verdicts
        for size in (1, 2, 3):
            for names in itertools.permutations(NAMES[:9] if size == 3 else NAMES, size):
                headers = [(name, f"v{i}") for i, name in enumerate(names)]
                assert hop.request_headers(headers, drop, prefixes) == _long_way(
                    headers, drop, prefixes
                ), (rounds, headers)


def test_upgrade_requests_keep_their_two_step_answer() -> None:
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("X-Remote-User", "u")]
    for _ in range(2):
        assert hop.request_headers(headers) == (
            (("Upgrade", "websocket"), ("Connection", "Upgrade")),
            True,
        )


def test_request_header_verdicts_are_bounded() -> None:
    hop._VERDICTS.clear()
    drop: frozenset[str] = frozenset({"x-drop"})
    headers = [(f"X-Name-{i}", "v") for i in range(hop._VERDICT_NAMES + 50)]
    headers.append(("X-Drop", "secret"))
    headers.append(("Y" * (hop._VERDICT_NAME_LENGTH + 1), "v"))
    expected = (*headers[:-2], headers[-1])
    for _ in range(2):
        kept, upgrade = hop.request_headers(headers, drop)
        assert kept == expected
        assert not upgrade
    verdicts = hop._VERDICTS[(drop, ())]
    assert len(verdicts) == hop._VERDICT_NAMES
    assert all(len(name) <= hop._VERDICT_NAME_LENGTH for name in verdicts)
    for i in range(hop._VERDICT_CONFIGURATIONS + 3):
        hop.request_headers([("X-Drop", "v")], frozenset({f"x-{i}"}))
    assert len(hop._VERDICTS) <= hop._VERDICT_CONFIGURATIONS
    # A configuration whose verdicts were forgotten still drops what it must.
    assert hop.request_headers(headers, drop)[0] == expected


class _Stream(RecordingStream):
    """The child client's stream double, read for the response heads it was given."""

    @property
    def heads(self) -> list[tuple[object, ...]]:
        return [call[1:] for call in self.calls if call[0] == "headers"]


async def test_response_header_names_are_forwarded_as_spelled_every_time() -> None:
    child_client._FORWARDED_NAMES.clear()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\ncontent-type: c/d\r\nCONNECTION: x-hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nAudit-Id: \xe9\r\n"
        b"X-" + b"L" * 100 + b": long\r\nDate: now\r\n\r\n0\r\n\r\n"
    )
    expected = (
        ("Content-Type", "a/b"),
        ("content-type", "c/d"),
        ("Audit-Id", "\xe9"),
        ("X-" + "L" * 100, "long"),
        ("Date", "now"),
    )
    conn = _Connection(Origin("127.0.0.1", 1, None, "127.0.0.1:1"), asyncio.get_running_loop())
    for _ in range(3):
        stream = _Stream()
        conn.begin(stream, head_only=False)  # type: ignore[arg-type]
        conn.data_received(head)
        assert conn.delivered
        assert stream.heads == [(200, expected, None)]
    # Only forwarded names are remembered, and no long one.
    assert set(child_client._FORWARDED_NAMES) == {b"Content-Type", b"content-type"} | {
        b"Audit-Id",
        b"Date",
        b"X-Hop",
    }
    stream = _Stream()
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    conn.data_received(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Hop: 2\r\n\r\n")
    assert stream.heads == [(204, (("X-Hop", "2"),), {CONTENT_LENGTH_KEY: 0})]


async def test_response_header_name_memory_is_bounded() -> None:
    child_client._FORWARDED_NAMES.clear()
    conn = _Connection(Origin("127.0.0.1", 1, None, "127.0.0.1:1"), asyncio.get_running_loop())
    names = [b"X-N-%d" % i for i in range(child_client._NAME_CACHE_SIZE + 10)]
    stream = _Stream()
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    conn.data_received(
        b"HTTP/1.1 200 OK\r\n"
        + b"".join(n + b": v\r\n" for n in names)
        + b"Content-Length: 0\r\n\r\n"
    )
    assert stream.heads[0][1] == tuple((n.decode(), "v") for n in names)
    assert len(child_client._FORWARDED_NAMES) == child_client._NAME_CACHE_SIZE


@pytest.mark.parametrize(
    "method", ["GET", "PATCH", "PROPFIND", "M-SEARCH", "get", "GET ", "G\x00T", "", "GÉT", "A:B"]
)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/pods",
        "/a?b=c&d=%20",
        "/a\tb",
        "/a b",
        "/a\r\nHost: evil",
        "/a\x7f",
        "/é",
        "/a\x85b",
        "/a\u2028b",
        "/a\xa0b",
        "@evil/",
        "",
    ],
)
def test_request_line_checks_answer_as_the_patterns(method: str, path: str) -> None:
    allowed = (
        bool(_METHOD.match(method))
        and path.startswith("/")
        and " " not in path
        and not _LINE_BREAKERS.search(path)
    )
    if allowed:
        _check_request_line(method, path)
    else:
        with pytest.raises(ValueError, match="refusing request"):
            _check_request_line(method, path)


@pytest.mark.parametrize(
    "user",
    [
        UserInfo(name="a"),
        UserInfo(name="a", uid="u", groups=("g", "h"), extra={"k": ("v", "w"), "e": ()}),
    ],
)
def test_identity_metadata_round_trips(user: UserInfo) -> None:
    metadata = user.to_metadata()
    assert metadata == {
        "user": user.name,
        "uid": user.uid,
        "groups": list(user.groups),
        "extra": {key: list(values) for key, values in user.extra.items()},
    }
    assert UserInfo.from_metadata(metadata) == user
    assert user.to_metadata() is not metadata
    assert user.to_metadata()["extra"] is not metadata["extra"]


async def test_equal_origins_share_one_idle_pool() -> None:
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        served += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ChildClient()
    try:
        for origin in [Origin("127.0.0.1", port, None, f"127.0.0.1:{port}") for _ in range(3)]:
            stream = _Stream()
            await client.forward(
                stream,  # type: ignore[arg-type]
                origin,
                "GET",
                "/",
                b"Host: x\r\n\r\n",
                chunked=False,
                has_body=False,
            )
            assert stream.heads == [(200, (), {CONTENT_LENGTH_KEY: 2})]
            assert client.idle_connections(origin) == 1
        assert served == 1
        await client.close()
        assert client.idle_connections(origin) == 0
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def _padded_head(total: int, name_length: int = 10) -> list[tuple[bytes, bytes]]:
    """Header fields whose sizes as the limit counts them (name + value + 4) sum to
    ``total``, with forwarded names (the common path) and one Content-Type."""
    fields = [(b"Content-Type", b"application/json")]
    left = total - (12 + 16 + 4)
    i = 0
    while left > 0:
        name = b"X-P%0*d" % (name_length - 3, i)
        value_length = min(200, left - len(name) - 4)
        if value_length < 0:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"v" * left)
            break
        fields.append((name, b"v" * value_length))
        left -= len(name) + value_length + 4
        i += 1
    assert sum(len(n) + len(v) + 4 for n, v in fields) == total
    return fields


def _feed(conn: _Connection, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        conn.data_received(data[start : start + piece])


@pytest.mark.parametrize("piece", [1 << 20, 4096, 997])
@pytest.mark.parametrize("excess", [0, 1])
@pytest.mark.parametrize("name_length", [4, 10])
async def test_the_response_head_limit_is_exact(piece: int, excess: int, name_length: int) -> None:
    # The Content-Length field counts too (14 + 1 + 4 = 19).
    fields = _padded_head(child_client.MAX_RESPONSE_HEAD - 19 + excess, name_length)
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
    conn = _Connection(Origin("127.0.0.1", 1, None, "127.0.0.1:1"), asyncio.get_running_loop())
    stream = _Stream()
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    _feed(conn, head + b"Content-Length: 2\r\n\r\nok", piece)
    assert conn.delivered is not bool(excess)
    assert (conn.error is not None) is bool(excess)
    if not excess:
        assert stream.heads[0][1] == tuple((n.decode(), v.decode()) for n, v in fields)


@pytest.mark.parametrize("piece", [1 << 20, 4096])
@pytest.mark.parametrize("excess", [0, 1])
async def test_trailers_count_toward_the_head_limit(piece: int, excess: int) -> None:
    """Trailers are reported as header fields and count with the head, after a body large
    enough to make the connection count every field."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    used = 17 + 7 + 4  # Transfer-Encoding: chunked
    body = b"%x\r\n%b\r\n0\r\n" % (40000, b"b" * 40000)
    trailers = _padded_head(child_client.MAX_RESPONSE_HEAD - used + excess)
    tail = b"".join(n + b": " + v + b"\r\n" for n, v in trailers) + b"\r\n"
    conn = _Connection(Origin("127.0.0.1", 1, None, "127.0.0.1:1"), asyncio.get_running_loop())
    stream = _Stream()
    conn.begin(stream, head_only=False)  # type: ignore[arg-type]
    _feed(conn, head + body + tail, piece)
    assert (conn.error is not None) is bool(excess)
    assert conn.complete is not bool(excess)


class _Recorder:
    """Stands in for the executor's child client: records what would be written."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes, bool]] = []

    async def forward(
        self,
        stream: object,
        origin: object,
        method: str,
        target: str,
        tail: bytes,
        *,
        chunked: bool,
        has_body: bool,
    ) -> None:
        self.sent.append((method, target, tail, chunked))


class _OpenStream:
    def __init__(self, head: frames.HttpRequestHead, metadata: dict[str, object]) -> None:
        self.target = head
        self.metadata = metadata
        self.resets: list[tuple[object, str]] = []

    def reset(self, code: object, reason: str = "") -> None:
        self.resets.append((code, reason))


class _Str(str):
    __slots__ = ()


def _requests() -> list[tuple[str, frames.Headers, object, bool, str]]:
    alice = {"user": "alice", "uid": "", "groups": ["dev", "system:authenticated"], "extra": {}}
    accept = (("Accept", "application/json"),)
    other = (("Accept", "application/yaml"),)
    return [
        ("GET", accept, alice, False, "t1"),
        ("GET", accept, alice, False, "t1"),
        ("GET", accept, dict(alice), False, "t1"),
        ("GET", accept, {**alice, "groups": ["system:authenticated", "dev"]}, False, "t1"),
        ("GET", accept, alice, False, "t1"),
        ("GET", accept, alice, False, "t2"),  # a rotated token
        ("GET", accept, alice, False, "t2"),
        ("GET", other, alice, False, "t2"),
        ("POST", other, alice, True, "t2"),
        ("POST", other, alice, False, "t2"),
        ("DELETE", other, alice, False, "t2"),
        ("GET", accept, {"user": "alice", "groups": ["dev", "system:authenticated"]}, False, "t2"),
        ("GET", accept, {**alice, "uid": "u-1"}, False, "t2"),
        ("GET", accept, {**alice, "extra": {"scopes": ["a", "b"]}}, False, "t2"),
        ("GET", accept, {**alice, "extra": {"scopes": ["a", "b"]}}, False, "t2"),
        ("GET", accept, {**alice, "extra": {"scopes": ["a"]}}, False, "t2"),
        ("GET", accept, {**alice, "extra": {"clusternet-token": ["child"]}}, False, "t2"),
        ("GET", accept, {**alice, "extra": {"clusternet-token": ["child"]}}, False, "t2"),
        ("GET", accept, alice, False, "t2"),
        ("GET", accept, {**alice, "user": _Str("alice")}, False, "t2"),
        ("GET", accept, {**alice, "user": "mallory"}, False, "t2"),
        ("GET", accept, {**alice, "groups": ["dev", 1]}, False, "t2"),
        ("GET", accept, {**alice, "user": ""}, False, "t2"),
        ("GET", accept, alice, False, "t2"),
        ("GET", (("Accept", "a\r\nX: y"),), alice, False, "t2"),
        ("GET", (("Accept", "a\r\nX: y"),), alice, False, "t2"),
        ("GET", accept, None, False, "t2"),
        ("GET", accept, alice, False, "t2"),
    ]


async def test_repeated_requests_get_the_heads_of_fresh_executors() -> None:
    """Whatever came before, each request is written as an executor without caches writes it
    (or refused as it refuses it)."""
    token = ["t1"]
    cached = Executor(ChildApiserver(url="http://127.0.0.1:1", token=lambda: token[0]))
    cached._client = _Recorder()  # type: ignore[assignment]
    for method, headers, identity, has_body, token[0] in _requests():
        fresh = Executor(ChildApiserver(url="http://127.0.0.1:1", token=lambda: token[0]))
        fresh._client = _Recorder()  # type: ignore[assignment]
        results = []
        for executor in (cached, fresh):
            metadata = {METADATA_KEY: identity, BODY_KEY: has_body, TARGET_KEY: {"kind": "direct"}}
            stream = _OpenStream(frames.HttpRequestHead(method, "/api/v1/pods", headers), metadata)
            await executor(stream)  # type: ignore[arg-type]
            results.append((executor._client.sent[-1:], stream.resets))  # type: ignore[union-attr]
            if executor._client.sent:  # type: ignore[union-attr]
                executor._client.sent.clear()  # type: ignore[union-attr]
        assert results[0] == results[1], (method, headers, identity, has_body, token[0])


async def test_an_upgrade_never_takes_a_remembered_head() -> None:
    executor = Executor(ChildApiserver(url="http://127.0.0.1:1", token=lambda: "t"))
    recorder = executor._client = _Recorder()  # type: ignore[assignment]
    identity = {"user": "alice", "uid": "", "groups": [], "extra": {}}
    head = frames.HttpRequestHead("GET", "/api/v1/pods", (("Accept", "a"),))
    for upgrade in (False, False, True):
        metadata = {METADATA_KEY: identity, BODY_KEY: False, UPGRADE_KEY: upgrade}
        stream = _OpenStream(head, metadata)
        await executor(stream)  # type: ignore[arg-type]
    assert len(recorder.sent) == 2  # the upgrade dialled the child itself (and failed)
    assert [code for code, _ in stream.resets] == [ErrorCode.DIAL_FAILED]
