"""A compromised hub against the agent: what the agent does with the streams it is handed.

The hub is trusted with routing, not with the child. Here the test takes the hub's side of a
live tunnel (``world.registry``) and opens streams by hand, as an attacker controlling the hub
could: odd request paths, line breaks in paths, headers and identities, forbidden groups, dial
targets that alias allowed ones. The agent must never send its credentials anywhere but its own
API server, never let a header be smuggled, and dial only what its policy names verbatim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from clusternet_aa.identity import METADATA_KEY, UserInfo
from clusternet_aa.proxy.dialer import allow_addresses
from clusternet_aa.proxy.executor import BODY_KEY, TARGET_KEY, UPGRADE_KEY
from clusternet_aa.proxy.identity_mapping import IdentityPolicy, impersonation_headers
from clusternet_aa.tunnel.protocol import frames
from clusternet_aa.tunnel.protocol.errors import ErrorCode
from clusternet_aa.tunnel.streams import StreamResetError
from tests.proxy.conftest import CLUSTER_ID, ProxyWorld
from tests.security.conftest import ChildLog


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A plain HTTP server that records whatever reaches it (an attacker's host)."""
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(text="captured")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"127.0.0.1:{site._server.sockets[0].getsockname()[1]}", seen  # type: ignore[union-attr]
    await runner.cleanup()


async def hub_request(
    world: ProxyWorld,
    path: str,
    *,
    user: UserInfo | None = None,
    headers: frames.Headers = (),
    target: dict[str, Any] | None = None,
) -> tuple[int, bytes] | StreamResetError:
    """Open an HTTP stream from the hub's side of the tunnel, exactly as given."""
    session = world.registry.get(CLUSTER_ID)
    assert session is not None
    metadata = {
        METADATA_KEY: (user or UserInfo(name="alice", groups=("dev",))).to_metadata(),
        TARGET_KEY: target or {"kind": "direct"},
        UPGRADE_KEY: False,
        BODY_KEY: False,
    }
    stream = await session.open_stream(frames.HttpRequestHead("GET", path, headers), metadata)
    stream.write_eof()
    try:
        head = await asyncio.wait_for(stream.response(), 10)
        body = b"".join([chunk async for chunk in stream])
    except StreamResetError as exc:
        return exc
    return head.status, body


@pytest.mark.parametrize(
    "path",
    [
        "@{capture}/steal",
        ":1@{capture}/steal",
        "@{capture}",
        "\\\\{capture}/steal",
        "/\\\\{capture}/steal",
    ],
)
async def test_a_path_cannot_move_the_request_to_another_host(
    child_log: ChildLog,
    world: ProxyWorld,
    capture: tuple[str, list[web.Request]],
    path: str,
) -> None:
    """``https://child:6443`` + ``@evil/x`` would be ``https://child:6443@evil/x``: the agent
    refuses paths that do not start with ``/`` and never sends its token elsewhere."""
    address, seen = capture
    await world.connect_agent()
    child_log.clear()
    result = await hub_request(world, path.format(capture=address))
    assert seen == [], "the agent's request reached another host"
    if isinstance(result, StreamResetError):
        assert result.code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FORBIDDEN)
    else:
        assert 400 <= result[0] < 500  # the child's own answer to an odd path
    for request in child_log.requests:
        assert request.raw_path.startswith("/")


@pytest.mark.parametrize(
    "path",
    [
        "/api\r\nImpersonate-User: admin-user\r\nX: y",
        "/api HTTP/1.1\r\nImpersonate-Group: system:masters\r\n\r\nGET /api",
        "/api\nImpersonate-User: admin-user",
        "/api\x00",
        "/a pi",
    ],
)
async def test_line_breaks_in_a_path_are_never_written_to_the_child(
    child_log: ChildLog, world: ProxyWorld, path: str
) -> None:
    await world.connect_agent()
    child_log.clear()
    result = await hub_request(world, path)
    if isinstance(result, StreamResetError):
        assert result.code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.DIAL_FAILED)
    else:
        assert 400 <= result[0] < 500
    for request in child_log.requests:
        names = {name.lower(): value for name, value in request.headers}
        assert names.get("impersonate-user") == "alice"
        assert "system:masters" not in [
            v for n, v in request.headers if n.lower() == "impersonate-group"
        ]
    # The tunnel and the agent are fine afterwards.
    status = await hub_request(world, "/version")
    assert not isinstance(status, StreamResetError)
    assert status[0] == 200


@pytest.mark.parametrize(
    "user",
    [
        UserInfo(name="alice\r\nImpersonate-Group: system:masters", groups=("dev",)),
        UserInfo(name="alice", groups=("dev\r\nImpersonate-User: admin-user",)),
        UserInfo(name="alice", uid="1\r\nImpersonate-Group: system:masters"),
        UserInfo(name="alice", extra={"scopes": ("x\r\nImpersonate-Group: system:masters",)}),
        UserInfo(name="alice", extra={"k\r\nImpersonate-Group": ("system:masters",)}),
    ],
)
async def test_line_breaks_in_an_identity_never_become_headers(
    child_log: ChildLog, world: ProxyWorld, user: UserInfo
) -> None:
    """Identities come from the parent (TokenReview, OIDC claims, webhooks) and may hold any
    character; the agent refuses what cannot be a header value instead of writing it raw."""
    await world.connect_agent()
    child_log.clear()
    result = await hub_request(world, "/api/v1/namespaces/default/pods", user=user)
    if not isinstance(result, StreamResetError):
        assert result[0] in (200, 403)
    for request in child_log.requests:
        groups = [v for n, v in request.headers if n.lower() == "impersonate-group"]
        assert "system:masters" not in groups
        assert [v for n, v in request.headers if n.lower() == "impersonate-user"] in (
            [],
            ["alice"],
        )


async def test_credentials_go_only_to_the_agents_own_apiserver(
    child_log: ChildLog, world: ProxyWorld, capture: tuple[str, list[web.Request]]
) -> None:
    address, seen = capture
    await world.connect_agent(dial_policy=allow_addresses([address]))
    child_log.clear()
    result = await hub_request(
        world,
        "/x",
        headers=(("Authorization", "Bearer forged"), ("Impersonate-User", "admin-user")),
        target={"kind": "url", "scheme": "http", "host": address},
    )
    assert result == (200, b"captured")
    (request,) = seen
    assert "Authorization" not in request.headers
    assert not [k for k in request.headers if k.lower().startswith(("impersonate-", "x-remote-"))]


# ---------------------------------------------------------------------------- group mapping


def test_default_policy_drops_every_powerful_group_and_keeps_lookalikes_as_strangers() -> None:
    user = UserInfo(
        name="mallory",
        groups=(
            "system:masters",
            "system:nodes",
            "system:serviceaccounts",
            "system:serviceaccounts:kube-system",
            "system:kube-controller-manager",
            "system:bootstrappers",
            "system:authenticated",
            "System:Masters",  # kube group names are case-sensitive: a different group
            " system:masters",
            "system:masters ",
            "parent:system:masters",
            "dev",
        ),
    )
    mapped = IdentityPolicy().map(user)
    assert mapped.groups == (
        "system:authenticated",
        "System:Masters",
        " system:masters",
        "parent:system:masters",
        "dev",
    )
    prefixed = IdentityPolicy(group_prefix="parent:", user_prefix="parent:").map(user)
    assert "system:masters" not in prefixed.groups
    assert all(g.startswith("parent:") or g == "system:authenticated" for g in prefixed.groups)
    assert prefixed.name == "parent:mallory"


def test_extras_cannot_inject_groups_or_users() -> None:
    user = UserInfo(
        name="mallory",
        extra={
            "Impersonate-Group": ("system:masters",),
            "groups": ("system:masters",),
            "../User": ("admin",),
            "a\r\nImpersonate-User": ("admin",),
            "clusternet-token": ("child-token",),  # a credential, not an extra: never impersonated
        },
    )
    headers = impersonation_headers(IdentityPolicy().map(user))
    assert [v for n, v in headers if n == "Impersonate-User"] == ["mallory"]
    assert [n for n, _ in headers if n == "Impersonate-Group"] == []
    for name, value in headers:
        assert "\r" not in name
        assert "\n" not in name
        assert value != "child-token"
        if name != "Impersonate-User":
            assert name.startswith("Impersonate-Extra-")
            assert name.removeprefix("Impersonate-Extra-").isascii()
            assert "/" not in name


async def test_lookalike_groups_grant_nothing_in_the_child(
    child_log: ChildLog, world: ProxyWorld
) -> None:
    await world.connect_agent()
    child_log.clear()
    user = UserInfo(
        name="mallory",
        groups=("System:Masters", " system:masters", "system:masters ", "system:nodes"),
        extra={"groups": ("system:masters",)},
    )
    result = await hub_request(world, "/api/v1/namespaces/kube-system/secrets", user=user)
    assert not isinstance(result, StreamResetError)
    assert result[0] == 403


async def test_a_parent_serviceaccount_name_is_refused_by_a_child_that_does_not_grant_it(
    child_log: ChildLog, world: ProxyWorld
) -> None:
    """Parent users named ``system:serviceaccount:<ns>:<name>`` are impersonated verbatim, so
    the child decides: without ``impersonate`` on ``serviceaccounts`` for the agent (the
    manifests' default) the child refuses them, even for kube-system's most powerful accounts."""
    token = world.child.admin_token
    import aiohttp

    rules = {
        "rules": [
            {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]},
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["uids", "userextras/scopes"],
                "verbs": ["impersonate"],
            },
        ]
    }
    async with (
        aiohttp.ClientSession() as client,
        client.patch(
            world.child.url
            + "/apis/rbac.authorization.k8s.io/v1/clusterroles/clusternet-agent-impersonator",
            json=rules,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/merge-patch+json",
            },
            ssl=world.child_ssl or False,
        ) as response,
    ):
        assert response.status == 200, await response.text()
    await world.connect_agent()
    child_log.clear()
    for name in (
        "system:serviceaccount:kube-system:clusterrole-aggregation-controller",
        "system:serviceaccount:kube-system:default",
    ):
        result = await hub_request(
            world, "/api/v1/namespaces/kube-system/secrets", user=UserInfo(name=name)
        )
        assert not isinstance(result, StreamResetError)
        assert result[0] == 403
        assert b"impersonate" in result[1]


# ---------------------------------------------------------------------------- dial policy


@pytest.mark.parametrize(
    "alias",
    [
        "localhost:{port}",
        "127.1:{port}",
        "127.0.0.1:0{port}",
        "0x7f.0.0.1:{port}",
        "2130706433:{port}",
        "[::1]:{port}",
        "[::ffff:127.0.0.1]:{port}",
        "127.0.0.1:{port} ",
        " 127.0.0.1:{port}",
        "127.0.0.1.:{port}",
        "localhost.:{port}",
    ],
)
def test_dial_policy_matches_the_address_verbatim(alias: str) -> None:
    """The rule: an allow-list entry is a literal ``host:port`` string, compared exactly, with
    no DNS resolution and no address normalisation. A name that resolves to an allowed IP, or
    another spelling of an allowed IP, is refused unless it is listed itself; a listed name is
    dialed by name (operators list names only for hosts whose DNS they trust)."""
    policy = allow_addresses(["127.0.0.1:6443"])
    assert policy(frames.DialTarget("tcp", "127.0.0.1:6443"))
    assert not policy(frames.DialTarget("tcp", alias.format(port=6443)))
    assert not policy(frames.DialTarget("udp", "127.0.0.1:6443"))
    assert not policy(frames.DialTarget("tcp4", "127.0.0.1:6443"))


@pytest.mark.parametrize("spelling", ["localhost:{port}", "[::1]:{port}", "127.1:{port}"])
async def test_aliases_of_the_child_address_are_refused_end_to_end(
    child_log: ChildLog, world: ProxyWorld, spelling: str
) -> None:
    await world.connect_agent()
    child_log.clear()
    port = world.child.url.rsplit(":", 1)[1]
    session = world.registry.get(CLUSTER_ID)
    assert session is not None
    stream = await session.open_stream(frames.DialTarget("tcp", spelling.format(port=port)))
    with pytest.raises(StreamResetError) as info:
        await asyncio.wait_for(stream.response(), 10)
    assert info.value.code is ErrorCode.FORBIDDEN
    # The same alias as a URL target is refused too, and no request reached the child.
    result = await hub_request(
        world,
        "/api",
        target={"kind": "url", "scheme": "https", "host": spelling.format(port=port)},
    )
    assert isinstance(result, StreamResetError)
    assert result.code is ErrorCode.FORBIDDEN
    assert child_log.requests == []
