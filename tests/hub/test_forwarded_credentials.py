"""The hub's real proxy route behind its real middleware: what a proxied request carries into
the tunnel, with front-proxy identity headers configured under names of the deployment's own
choosing. The proxy handler is handed the credential header names instead of a stripped copy
of the request (``filters_credentials``); none of them may leave, any more than the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from clusternet_aa.apiserver.authn import CREDENTIAL_HEADERS_KEY, filters_credentials
from clusternet_aa.hub.app import Hub, add_socket_routes
from clusternet_aa.hub.server import HubServer
from clusternet_aa.proxy.executor import CONTENT_LENGTH_KEY
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import ResponseHead
from tests.hub.conftest import PKI, Caller, HubFactory, flag_settings, grant, with_auth

PROXY = "/apis/proxies.clusternet.io/v1alpha1/sockets/c1/proxy/direct/api/v1/pods"
CUSTOM = {
    "requestheader_username_headers": ("X-Custom-User",),
    "requestheader_group_headers": ("X-Custom-Group",),
    "requestheader_extra_headers_prefix": ("X-Custom-Extra-",),
    "requestheader_uid_headers": ("X-Custom-Uid",),
}
SENT = [
    ("X-Custom-User", "alice"),
    ("X-Custom-Group", "devs"),
    ("X-Custom-Extra-Scope", "s1"),
    ("X-Custom-Uid", "u-1"),
    ("X-Remote-User", "mallory"),  # not this hub's identity header: dropped all the same
    ("Impersonate-User", "root"),
    ("Authorization", "Bearer not-for-the-child"),
    ("X-Keep", "1"),
]


class _Stream:
    """The child's answer to one OPEN: a 200 with a small body, already complete."""

    def __init__(self) -> None:
        self._body = b'{"kind":"PodList"}'
        self.buffered = len(self._body)
        self.at_eof = True
        self.resets: list[ErrorCode] = []

    def write_eof(self) -> None:
        pass

    async def take_response(self) -> ResponseHead:
        return ResponseHead(
            200, (("Content-Type", "application/json"),), {CONTENT_LENGTH_KEY: len(self._body)}
        )

    async def read(self, max_bytes: int = -1) -> bytes:
        body, self._body = self._body, b""
        self.buffered = 0
        return body

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        self.resets.append(code)


class _Session:
    """A live tunnel that records what the hub opens on it."""

    is_closed = False
    is_draining = False

    def __init__(self) -> None:
        self.opened: list[tuple[frames.HttpRequestHead, dict[str, Any]]] = []

    async def open_stream(
        self, head: frames.HttpRequestHead, metadata: dict[str, Any], *, end: bool = False
    ) -> _Stream:
        self.opened.append((head, metadata))
        return _Stream()

    async def close(self, *args: Any, **kwargs: Any) -> None:
        self.is_closed = True


@pytest.fixture(autouse=True)
async def everyone_may_proxy(sim: KubesimServer) -> None:
    await grant(sim, "socketsproxy", [{"kind": "Group", "name": "system:authenticated"}])


async def _hub_with_tunnel(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> tuple[HubServer, _Session]:
    settings = with_auth(flag_settings(pki, parent_kubeconfig), **CUSTOM)
    server = await start_hub(settings, echo=False)
    session = _Session()
    server.hub.tunnels.attach("c1", session)  # type: ignore[arg-type]
    return server, session


async def test_configured_identity_headers_never_reach_the_tunnel(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    server, session = await _hub_with_tunnel(start_hub, pki, parent_kubeconfig)
    reply = await Caller(server)(PROXY, client=pki.front_client, headers=SENT)
    assert reply.status == 200, reply.text
    assert reply.body == {"kind": "PodList"}
    [(head, metadata)] = session.opened
    names = {name.lower() for name, _ in head.headers}
    assert "x-keep" in names
    assert not {n for n in names if n.startswith(("x-custom-", "x-remote-", "impersonate-"))}
    assert not names & {"authorization", "host", "connection"}
    # The identity travels as OPEN metadata, taken from the configured headers.
    assert metadata["identity"] == {
        "user": "alice",
        "uid": "u-1",
        "groups": ["devs", "system:authenticated"],
        "extra": {"scope": ["s1"]},
    }


async def test_connection_named_headers_and_credentials_both_dropped(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    """A Connection header takes the two-step filter; the configured names still go."""
    server, session = await _hub_with_tunnel(start_hub, pki, parent_kubeconfig)
    sent = [*SENT, ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1")]
    reply = await Caller(server)(PROXY, client=pki.front_client, headers=sent)
    assert reply.status == 200, reply.text
    [(head, _)] = session.opened
    names = {name.lower() for name, _ in head.headers}
    assert "x-keep" in names
    assert not names & {"x-hop", "connection", "authorization", "x-custom-user", "x-remote-user"}
    assert not {n for n in names if n.startswith("x-custom-")}


async def test_handlers_not_declared_still_get_a_stripped_request(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    seen: dict[str, Any] = {}

    async def plain(request: web.Request) -> web.Response:
        seen["plain"] = ({k.lower() for k in request.headers}, request.get(CREDENTIAL_HEADERS_KEY))
        return web.json_response({})

    @filters_credentials
    async def declared(request: web.Request) -> web.Response:
        seen["declared"] = (
            {k.lower() for k in request.headers},
            request.get(CREDENTIAL_HEADERS_KEY),
        )
        return web.json_response({})

    def routes(app: web.Application, hub: Hub) -> None:
        app.router.add_get("/plain", plain)
        app.router.add_get("/declared", declared)

    settings = with_auth(flag_settings(pki, parent_kubeconfig), **CUSTOM)
    server = HubServer(settings, extra_routes=routes)
    await server.start()
    try:
        call = Caller(server)
        assert (await call("/plain", client=pki.front_client, headers=SENT)).status == 200
        assert (await call("/declared", client=pki.front_client, headers=SENT)).status == 200
    finally:
        await server.stop()
    plain_names, plain_key = seen["plain"]
    assert plain_key is None
    assert not plain_names & {"x-custom-user", "x-custom-group", "x-custom-uid", "authorization"}
    assert "x-custom-extra-scope" not in plain_names
    assert "x-keep" in plain_names
    declared_names, (exact, prefixes) = seen["declared"]
    assert "x-custom-user" in declared_names  # as it came: the handler drops them itself
    assert {"authorization", "x-custom-user", "x-custom-group", "x-custom-uid"} <= exact
    assert prefixes == ("x-custom-extra-",)


async def test_errors_and_redirects_stay_status_bodies(
    start_hub: HubFactory, pki: PKI, parent_kubeconfig: Path
) -> None:
    """The one combined middleware renders what the two did."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://elsewhere/"})

    async def http_redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere/")

    def routes(app: web.Application, hub: Hub) -> None:
        app.router.add_get("/broken", broken)
        app.router.add_get("/redirect", redirect)
        app.router.add_get("/http-redirect", http_redirect)
        add_socket_routes(app, hub)

    server = HubServer(flag_settings(pki, parent_kubeconfig), extra_routes=routes)
    await server.start()
    try:
        call = Caller(server)
        broken_reply = await call("/broken", client=pki.front_client, headers=SENT[:1])
        assert broken_reply.status == 401  # default header names: X-Custom-User names nobody
        front = [("X-Remote-User", "alice")]
        for path in ("/broken", "/redirect", "/http-redirect"):
            reply = await call(path, client=pki.front_client, headers=front)
            assert reply.status == 500, path
            assert reply.body["kind"] == "Status"
            assert reply.body["reason"] == "InternalError"
            assert "Location" not in reply.headers
        not_allowed = await call("/broken", method="POST", client=pki.front_client, headers=front)
        assert not_allowed.status == 405
        assert not_allowed.body["kind"] == "Status"
        # no live tunnel for c1: the proxy's own Status passes through unchanged
        unavailable = await call(PROXY, client=pki.front_client, headers=front)
        assert unavailable.status == 503
        assert unavailable.body["reason"] == "ServiceUnavailable"
    finally:
        await server.stop()
