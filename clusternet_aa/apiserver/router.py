"""aiohttp's router with a shortcut for the hub's busiest prefix.

aiohttp finds a request's route by walking its path from the full path up, one segment at a
time, looking each part up in an index of route prefixes. A proxied request's path is long
(``/apis/proxies.clusternet.io/v1alpha1/sockets/<id>/proxy/direct/api/v1/namespaces/...``),
so the walk takes a dozen lookups and splits before it reaches the sockets prefix, on every
request: about 5% of the hub's handling of a small proxied GET. :class:`ShortcutRouter` goes
straight to the routes indexed under one prefix for paths below it, and is exactly
equivalent to the walk: it is enabled only when no route is indexed deeper under that prefix
(and no domain-matched sub-application exists), so the walk's first candidates would be those
same routes, tried in the same order; when none of them matches, the full walk runs.

aiohttp 3.x takes a custom router through ``web.Application(router=...)``, which it marks
deprecated: :func:`application` passes it with that warning silenced (aiohttp is pinned; a
test checks that the router in use is this one and answers as the walk does).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource, UrlMappingMatchInfo


class ShortcutRouter(web.UrlDispatcher):
    """A :class:`web.UrlDispatcher` that resolves paths under ``prefix`` without the walk."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix.rstrip("/")
        self._below = self._prefix + "/"
        #: The routes indexed under the prefix, once frozen and when the shortcut is exact.
        self._candidates: tuple[AbstractResource, ...] = ()

    @property
    def shortcut_enabled(self) -> bool:
        return bool(self._candidates)

    def freeze(self) -> None:
        super().freeze()
        index = self._resource_index
        deeper = any(key.startswith(self._below) for key in index)
        if deeper or self._matched_sub_app_resources:
            self._candidates = ()
        else:
            self._candidates = tuple(index.get(self._prefix, ()))

    async def resolve(self, request: web.Request) -> UrlMappingMatchInfo:
        candidates = self._candidates
        if candidates and request.rel_url.path_safe.startswith(self._below):
            for candidate in candidates:
                match, _allowed = await candidate.resolve(request)
                if match is not None:
                    return match  # as the walk would: it returns the first candidate's match
        return await super().resolve(request)


def application(
    prefix: str, *, middlewares: Iterable[Any] = (), handler_args: dict[str, Any] | None = None
) -> web.Application:
    """A ``web.Application`` routing with a :class:`ShortcutRouter` for ``prefix``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "router argument is deprecated", DeprecationWarning)
        return web.Application(
            router=ShortcutRouter(prefix), middlewares=middlewares, handler_args=handler_args
        )
