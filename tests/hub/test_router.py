"""The hub's router shortcut answers exactly as aiohttp's walk over the same routes."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from clusternet_aa.apiserver import router
from clusternet_aa.hub.app import SOCKETS_PATH
from clusternet_aa.hub.server import HubServer
from clusternet_aa.proxy import routes
from clusternet_aa.proxy.tunnels import TunnelRegistry

PATHS = [
    SOCKETS_PATH + "/c1/proxy/direct/api/v1/namespaces/default/configmaps/obj-1024",
    SOCKETS_PATH + "/c1/proxy/direct/api/v1/namespaces/default/pods?watch=true",
    SOCKETS_PATH + "/c1/proxy",
    SOCKETS_PATH + "/c1/proxy/",
    SOCKETS_PATH + "/c1/proxyz/direct/api",
    SOCKETS_PATH + "/c1",
    SOCKETS_PATH + "/c1/",
    SOCKETS_PATH + "/",
    SOCKETS_PATH,
    SOCKETS_PATH + "/c%2F1/proxy/direct/api",
    SOCKETS_PATH + "/c1/proxy/https/10.0.0.1:443/x",
    "/apis/proxies.clusternet.io/v1alpha1",
    "/apis",
    "/healthz",
    "/metrics",
    "/",
    "/nowhere/at/all",
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]


async def _both(app: web.Application, method: str, path: str) -> tuple[object, object]:
    assert isinstance(app.router, router.ShortcutRouter)
    fast = await app.router.resolve(make_mocked_request(method, path, app=app))
    walked = await web.UrlDispatcher.resolve(app.router, make_mocked_request(method, path, app=app))
    return fast, walked


def _same(fast: object, walked: object) -> None:
    assert type(fast) is type(walked)
    assert fast.route is walked.route  # type: ignore[attr-defined]
    assert dict(fast) == dict(walked)  # type: ignore[call-overload]
    if fast.http_exception is not None:  # type: ignore[attr-defined]
        assert fast.http_exception.status == walked.http_exception.status  # type: ignore[attr-defined]


async def test_the_hub_routes_with_the_shortcut_as_the_walk_would(hub: HubServer) -> None:
    runner = hub._runner
    assert runner is not None
    app = runner.app
    assert isinstance(app.router, router.ShortcutRouter)
    assert app.router.shortcut_enabled
    for path in PATHS:
        for method in METHODS:
            _same(*(await _both(app, method, path)))


async def _ok(_: web.Request) -> web.Response:
    return web.Response()


def _proxy_app(extra: str | None = None) -> web.Application:
    app = router.application(SOCKETS_PATH)
    routes.add_routes(app, registry=TunnelRegistry(), authorizer=None, directory=None)  # type: ignore[arg-type]
    if extra is not None:
        app.router.add_get(extra, _ok)
    app.router.add_route("*", "/{tail:.*}", _ok)
    app.freeze()
    return app


async def test_a_route_indexed_deeper_under_the_prefix_turns_the_shortcut_off() -> None:
    # A literal route below the sockets prefix would come first in the walk: the shortcut
    # must not skip it, so it steps aside.
    app = _proxy_app(extra=SOCKETS_PATH + "/special/proxy/{tail:.*}")
    assert not app.router.shortcut_enabled  # type: ignore[attr-defined]
    fast, walked = await _both(app, "GET", SOCKETS_PATH + "/special/proxy/x")
    _same(fast, walked)
    assert fast.route.resource.canonical == SOCKETS_PATH + "/special/proxy/{tail}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", PATHS)
async def test_shortcut_and_walk_agree_on_the_proxy_routes(method: str, path: str) -> None:
    app = _proxy_app()
    assert app.router.shortcut_enabled  # type: ignore[attr-defined]
    _same(*(await _both(app, method, path)))
