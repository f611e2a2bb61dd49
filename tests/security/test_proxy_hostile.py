"""Hostile proxy requests through the real hub routes, tunnel and agent executor.

Every request is written byte for byte on a TLS socket (no client-side normalisation or
validation). Each one must get a 4xx (a ``metav1.Status`` whenever the hub or the child answers;
aiohttp's own HTTP-level rejections are plain 400s) and must reach nothing it should not: the
``child_log`` and ``agent_log`` fixtures record every request the kubesim child receives and
every stream the agents' executors are handed.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from clusternet_aa.identity import UserInfo
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.proxy.conftest import CLUSTER_ID, PARENT_USERS, ProxyWorld
from tests.security.conftest import AgentLog, ChildLog, RawResponse, raw_request

SOCKETS = "/apis/proxies.clusternet.io/v1alpha1/sockets/"
DIRECT = f"{SOCKETS}{CLUSTER_ID}/proxy/direct"
OTHER_ID = "deadbeef-0000-4000-8000-0000000000b2"
#: kube-apiserver refuses request bodies above 3 MiB; the child here does the same.
CHILD_BODY_LIMIT = 3 * 1024 * 1024


@pytest.fixture
async def hub(
    child_log: ChildLog, agent_log: AgentLog, world: ProxyWorld, monkeypatch: pytest.MonkeyPatch
) -> ProxyWorld:
    """The proxy world with cluster A connected, cluster B known and connected through its own
    agent, and a tenant user allowed on A only (``resourceNames``-style rule)."""
    monkeypatch.setitem(PARENT_USERS, "tenant-a-token", UserInfo(name="tenant-a"))
    world.authorizer.rules.add(("tenant-a", "*", "sockets/proxy", CLUSTER_ID))
    world.authorizer.rules.add(
        ("system:serviceaccount:clusternet-system:other", "create", "sockets", OTHER_ID)
    )
    world.directory.known.add(OTHER_ID)
    await world.connect_agent()
    await world.connect_agent(token="other-agent-token", cluster_id=OTHER_ID)
    child_log.clear()
    agent_log.streams.clear()
    return world


@pytest.fixture(autouse=True)
def _child_body_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    original = KubesimServer.make_app

    def make_app(self: KubesimServer) -> web.Application:
        app = original(self)
        app._client_max_size = CHILD_BODY_LIMIT
        return app

    monkeypatch.setattr(KubesimServer, "make_app", make_app)


async def send(
    world: ProxyWorld,
    method: str,
    target: bytes | str,
    *,
    headers: bytes = b"",
    body: bytes = b"",
    token: str = "alice-token",
) -> RawResponse:
    url = urlsplit(world.hub_url)
    if isinstance(target, str):
        target = target.encode()
    request = (
        method.encode() + b" " + target + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Connection: close\r\n" + headers
    )
    if body:
        request += b"Content-Length: %d\r\n" % len(body)
    request += b"\r\n" + body
    assert url.hostname is not None
    assert url.port is not None
    return await raw_request(url.hostname, url.port, world.client_ssl, request)


def assert_status(response: RawResponse, code: int, reason: str | None = None) -> dict[str, str]:
    assert response.status == code, response
    status = json.loads(response.body)
    assert status["kind"] == "Status"
    assert status["code"] == code
    if reason is not None:
        assert status["reason"] == reason
    return dict(status)


def assert_nothing_reached(child_log: ChildLog, agent_log: AgentLog) -> None:
    assert child_log.requests == [], child_log.paths()
    assert agent_log.streams == []


# ---------------------------------------------------------------------------- path traversal


TRAVERSALS = [
    f"/../../{OTHER_ID}/proxy/direct/api",
    "/api/../../../../../../healthz",
    "/api/v1/..",
    "/./api",
    "/api/.",
    "/%2e%2e/%2e%2e/api",
    "/%2E%2e/api",
    "/.%2e/api",
    "/%2e./api",
    "/api%2fv1/pods",
    "/api%2Fv1",
    "/api%5cv1",
    "/api%5C..%5Cx",
    "/api\\..\\x",
    "/%252e%252e/api",
    "/%252E%252E/%252F",
    "/api%255c..",
    "/..;/api",
    "/api/..;x=1/v1",
    "/.;/api",
    "/api/%00",
]


async def test_path_traversal_and_encoded_separators_get_400(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    for suffix in TRAVERSALS:
        response = await send(hub, "GET", DIRECT + suffix)
        assert response.status == 400, suffix
        assert_status(response, 400, "BadRequest")
    assert_nothing_reached(child_log, agent_log)


@pytest.mark.parametrize(
    "suffix",
    [
        f"/../../../../../{OTHER_ID}/proxy/direct/api",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/healthz",
    ],
)
async def test_traversal_into_another_cluster_or_hub_endpoint_gets_400(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog, suffix: str
) -> None:
    """Whatever the router makes of the dot segments, the raw path decides, and it is refused."""
    for method in ("GET", "POST", "DELETE"):
        response = await send(hub, method, DIRECT + suffix, body=b"{}" if method == "POST" else b"")
        assert 400 <= response.status < 500
        assert json.loads(response.body)["kind"] == "Status"
    assert_nothing_reached(child_log, agent_log)


@pytest.mark.parametrize(
    ("suffix", "code"),
    [
        # Not dot segments: names with dots reach the child verbatim and are its business.
        ("/api/v1/namespaces/default/configmaps/...", 404),
        ("/api/v1/namespaces/default/configmaps/x.", 404),
        ("/api/v1/namespaces/default/configmaps/a;b", 404),
        # A double slash must not turn the rest into a host (https://child//evil/...): the
        # child gets the path, and its RBAC refuses the non-resource URL.
        ("//127.0.0.2:1/api", 403),
    ],
)
async def test_odd_but_harmless_paths_reach_only_the_child_verbatim(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog, suffix: str, code: int
) -> None:
    response = await send(hub, "GET", DIRECT + suffix)
    assert_status(response, code)
    assert child_log.paths() == [suffix]
    assert [path for _, _, path in agent_log.streams] == [suffix]


# ---------------------------------------------------------------------------- CRLF and headers


async def test_encoded_crlf_in_path_and_query_never_becomes_a_header(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    # In the path: the hub's router does not match a path with a decoded newline: 404 at the
    # hub, nothing forwarded.
    get = await send(
        hub, "GET", DIRECT + "/api/v1/namespaces/default/pods/x%0d%0aX-Injected:%20yes"
    )
    assert_status(get, 404, "NotFound")
    assert_nothing_reached(child_log, agent_log)
    # In the query: forwarded, still encoded, never a header.
    listing = await send(
        hub, "GET", DIRECT + "/api/v1/namespaces/default/pods?labelSelector=a%0D%0AX-Injected:%201"
    )
    assert 200 <= listing.status < 500
    (seen,) = child_log.requests
    assert "x-injected" not in {name.lower() for name, _ in seen.headers}
    assert "%0D%0A" in seen.raw_path


@pytest.mark.parametrize(
    "request_line",
    [
        DIRECT.encode() + b"/api\rImpersonate-User: admin-user",
        DIRECT.encode() + b"/a\x00pi",
        DIRECT.encode() + b"/a\x7fpi",
    ],
)
async def test_control_bytes_in_the_request_line_are_refused_at_the_http_layer(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog, request_line: bytes
) -> None:
    response = await send(hub, "GET", request_line)
    assert 400 <= response.status < 500
    assert_nothing_reached(child_log, agent_log)


@pytest.mark.parametrize(
    "request_line",
    [
        DIRECT.encode() + b"/api/v1/namespaces/default/pods\r\nImpersonate-User: admin-user",
        DIRECT.encode() + b"/api/v1/namespaces/default/pods\nImpersonate-Group: system:masters",
        DIRECT.encode()
        + b"/api/v1/namespaces/default/pods HTTP/1.1\r\nX-Remote-User: admin-user\r\nX:",
    ],
)
async def test_line_breaks_in_the_request_line_cannot_smuggle_credentials(
    hub: ProxyWorld, child_log: ChildLog, request_line: bytes
) -> None:
    """aiohttp's parser reads some of these as a short request line plus a header line; the
    caller could have sent that header anyway, and credential headers are dropped: whatever
    reaches the child is alice, impersonated by the agent, and nothing else."""
    response = await send(hub, "GET", request_line)
    assert response.status < 500
    for seen in child_log.requests:
        headers = [(name.lower(), value) for name, value in seen.headers]
        assert [v for n, v in headers if n == "impersonate-user"] == ["alice"]
        assert [v for n, v in headers if n == "impersonate-group"] == ["dev"]
        assert not [n for n, _ in headers if n.startswith("x-remote-")]


MALFORMED_HEADERS = [
    b"X-Foo: a\rImpersonate-User: admin\r\n",
    b"X-Foo: a\x00b\r\n",
    b"X-Foo: a\r\n Impersonate-User: admin\r\n",  # obsolete line folding
    b"Bad Name: x\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",  # request smuggling
    b"Content-Length: 3\r\nContent-Length: 4\r\n",
    b"Transfer-Encoding: gzip, chunked, identity\r\n",
]


async def test_malformed_headers_are_refused_before_any_forwarding(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    for header in MALFORMED_HEADERS:
        response = await send(
            hub, "POST", DIRECT + "/api/v1/namespaces/default/configmaps", headers=header
        )
        assert 400 <= response.status < 500, (header, response)
    assert_nothing_reached(child_log, agent_log)


async def test_callers_credential_headers_never_reach_the_child(
    hub: ProxyWorld, child_log: ChildLog
) -> None:
    forged = (
        b"Impersonate-User: admin-user\r\n"
        b"Impersonate-Group: system:masters\r\n"
        b"Impersonate-Uid: 0\r\n"
        b"Impersonate-Extra-Scopes: all\r\n"
        b"X-Remote-User: admin-user\r\n"
        b"X-Remote-Group: system:masters\r\n"
        b"X-Remote-Extra-Clusternet-Token: stolen\r\n"
        b"Proxy-Authorization: Basic YWRtaW46YWRtaW4=\r\n"
    )
    response = await send(hub, "GET", DIRECT + "/api/v1/namespaces/default/pods", headers=forged)
    assert response.status == 200
    (seen,) = child_log.requests
    headers = [(name.lower(), value) for name, value in seen.headers]
    assert ("impersonate-user", "alice") in headers
    assert [v for n, v in headers if n == "impersonate-group"] == ["dev"]
    assert [v for n, v in headers if n == "impersonate-uid"] == ["u-alice"]
    assert not [n for n, _ in headers if n.startswith(("x-remote-", "impersonate-extra-"))]
    assert "proxy-authorization" not in dict(headers)
    assert dict(headers)["authorization"] == "Bearer child-agent-token"


# ---------------------------------------------------------------------------- sizes


async def test_a_header_over_64_kib_is_refused_by_the_http_layer(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    big = b"X-Big: " + b"a" * (65 * 1024) + b"\r\n"
    response = await send(hub, "GET", DIRECT + "/api", headers=big)
    assert 400 <= response.status < 500
    assert_nothing_reached(child_log, agent_log)


async def test_a_request_line_over_64_kib_is_refused(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    response = await send(hub, "GET", DIRECT + "/api/" + "a" * (65 * 1024))
    assert 400 <= response.status < 500
    assert_nothing_reached(child_log, agent_log)


async def test_headers_totalling_over_64_kib_get_431_and_the_tunnel_lives(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 7000) for i in range(12))
    response = await send(hub, "GET", DIRECT + "/api", headers=many)
    assert_status(response, 431)
    assert_nothing_reached(child_log, agent_log)
    # The tunnel is untouched: the next request works.
    after = await send(hub, "GET", DIRECT + "/api/v1/namespaces/default/pods")
    assert after.status == 200


async def test_a_body_over_the_childs_limit_gets_the_childs_413(
    hub: ProxyWorld, child_log: ChildLog
) -> None:
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "huge"},
        "data": {"x": "y" * (CHILD_BODY_LIMIT + 1024)},
    }
    response = await send(
        hub,
        "POST",
        DIRECT + "/api/v1/namespaces/default/configmaps",
        headers=b"Content-Type: application/json\r\n",
        body=json.dumps(document).encode(),
        token="admin-token",
    )
    assert_status(response, 413, "RequestEntityTooLarge")
    check = await send(
        hub, "GET", DIRECT + "/api/v1/namespaces/default/configmaps/huge", token="admin-token"
    )
    assert_status(check, 404, "NotFound")


# ---------------------------------------------------------------------------- cluster ids


async def test_unknown_cluster_id_is_404_and_reaches_no_agent(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    unknown = "deadbeef-0000-4000-8000-00000000dead"
    response = await send(hub, "GET", f"{SOCKETS}{unknown}/proxy/direct/api")
    status = assert_status(response, 404, "NotFound")
    assert unknown in status["message"]
    assert_nothing_reached(child_log, agent_log)


MALFORMED_CLUSTER_IDS = [
    CLUSTER_ID.upper(),
    CLUSTER_ID + ".",
    "-" + CLUSTER_ID,
    "a_b",
    "a" * 300,
    "%63" + CLUSTER_ID[1:],  # percent-encoded first character
    CLUSTER_ID + "%00",
    "%2e%2e",
    "..",
]


async def test_malformed_cluster_ids_get_400(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    for cluster_id in MALFORMED_CLUSTER_IDS:
        response = await send(hub, "GET", f"{SOCKETS}{cluster_id}/proxy/direct/api")
        assert 400 <= response.status < 500, cluster_id
        assert json.loads(response.body)["kind"] == "Status"
    assert_nothing_reached(child_log, agent_log)


async def test_a_tenant_of_cluster_a_cannot_reach_cluster_b(
    hub: ProxyWorld, child_log: ChildLog, agent_log: AgentLog
) -> None:
    ok = await send(hub, "GET", DIRECT + "/version", token="tenant-a-token")
    assert ok.status == 200
    agent_a = agent_log.streams[0][0]
    child_log.clear()
    agent_log.streams.clear()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        response = await send(
            hub,
            method,
            f"{SOCKETS}{OTHER_ID}/proxy/direct/api/v1/namespaces/default/configmaps",
            body=b"{}" if method in ("POST", "PUT", "PATCH") else b"",
            token="tenant-a-token",
        )
        status = assert_status(response, 403, "Forbidden")
        assert 'User "tenant-a" cannot' in status["message"]
        assert OTHER_ID in status["message"]
    # Neither B's agent nor any child saw anything; A's agent was not used for B either.
    assert_nothing_reached(child_log, agent_log)
    assert agent_a is hub.executors[0]
    # Nor can the tenant open B's tunnel, or A's, as if it were an agent.
    for cluster in (OTHER_ID, CLUSTER_ID):
        tunnel = await send(
            hub,
            "GET",
            SOCKETS + cluster,
            headers=b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Protocol: clusternet.tunnel.v1\r\n",
            token="tenant-a-token",
        )
        assert_status(tunnel, 403, "Forbidden")
