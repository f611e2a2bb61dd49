"""Discovery for ``proxies.clusternet.io/v1alpha1``: /apis, /apis/<group>, /apis/<group>/<version>.

The shapes are kube-apiserver's, because the parent's aggregator and kubectl decode them:

* ``GET /apis/<g>/<v>`` (``APIResourceList``) is the aggregator's availability probe; it must
  answer 2xx within 5 s or the whole APIService is marked unavailable.
* ``GET /apis`` whose Accept asks for
  ``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`` (or ``v2beta1``) gets
  the aggregated form with that exact Content-Type; any other Accept gets the legacy
  ``APIGroupList``, which tells the aggregator and client-go to fall back to per-version
  documents (kube-protocols §2.a).

Resources are what Clusternet's storage registers: ``sockets`` (a connecter: kind Socket,
short name ``ss``, category ``clusternet``, cluster scoped) and its ``sockets/proxy``
subresource. kube lists a connecter's verbs from its connect methods (GET get, POST create,
PUT update, PATCH patch, DELETE delete), sorted.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.proxy.ports import GROUP, VERSION

GROUP_VERSION = f"{GROUP}/{VERSION}"
KIND = "Socket"
CONNECT_VERBS = ["create", "delete", "get", "patch", "update"]
AGGREGATED_MEDIA = "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
_AGGREGATED_VERSIONS = ("v2", "v2beta1")

Obj = dict[str, Any]


def api_group() -> Obj:
    entry = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [entry],
        "preferredVersion": entry,
    }


def api_group_list() -> Obj:
    group = api_group()
    del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def api_resource_list() -> Obj:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "sockets",
                "singularName": "socket",
                "namespaced": False,
                "kind": KIND,
                "verbs": list(CONNECT_VERBS),
                "shortNames": ["ss"],
                "categories": ["clusternet"],
            },
            {
                "name": "sockets/proxy",
                "singularName": "",
                "namespaced": False,
                "kind": KIND,
                "verbs": list(CONNECT_VERBS),
            },
        ],
    }


def aggregated_group_list(discovery_version: str = "v2") -> Obj:
    """``/apis`` as an ``apidiscovery.k8s.io`` group list (v2 or v2beta1: the same shape)."""
    kind = {"group": GROUP, "version": VERSION, "kind": KIND}
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{discovery_version}",
        "metadata": {},
        "items": [
            {
                "metadata": {"name": GROUP, "creationTimestamp": None},
                "versions": [
                    {
                        "version": VERSION,
                        "freshness": "Current",
                        "resources": [
                            {
                                "resource": "sockets",
                                "singularResource": "socket",
                                "scope": "Cluster",
                                "responseKind": kind,
                                "verbs": list(CONNECT_VERBS),
                                "shortNames": ["ss"],
                                "categories": ["clusternet"],
                                "subresources": [
                                    {
                                        "subresource": "proxy",
                                        "responseKind": kind,
                                        "verbs": list(CONNECT_VERBS),
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        ],
    }


def negotiate_aggregated(accept: str) -> str | None:
    """The aggregated discovery version the client prefers over plain JSON, if any.

    Media ranges are taken in the client's order (client-go lists v2, v2beta1, then plain JSON);
    a plain JSON or wildcard range before any aggregated one means "legacy, please".
    """
    for item in accept.split(","):
        pieces = [p.strip() for p in item.split(";")]
        media = pieces[0].lower()
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if params.get("q") == "0":
            continue
        if media not in ("application/json", "application/*", "*/*"):
            continue
        if (
            params.get("g") == "apidiscovery.k8s.io"
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in _AGGREGATED_VERSIONS
        ):
            return params["v"]
        if "as" not in params and "g" not in params:
            return None
    return None


def _json(body: Obj, content_type: str = "application/json") -> web.Response:
    response = web.Response(body=json.dumps(body).encode(), status=200)
    response.headers["Content-Type"] = content_type
    response.headers["Vary"] = "Accept"
    return response


async def handle_apis(request: web.Request) -> web.Response:
    version = negotiate_aggregated(request.headers.get("Accept", ""))
    if version is not None:
        media = AGGREGATED_MEDIA.format(version=version)
        return _json(aggregated_group_list(version), media)
    return _json(api_group_list())


async def handle_group(request: web.Request) -> web.Response:
    return _json(api_group())


async def handle_version(request: web.Request) -> web.Response:
    return _json(api_resource_list())


async def handle_not_found(request: web.Request) -> web.Response:
    """The catch-all route: 405 when another route serves the path with other methods, else
    kube's plain 404 Status (never a redirect)."""
    own = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is own:
            continue
        _, allowed = await resource.resolve(request)
        if allowed:
            raise StatusError(
                405,
                "the server does not allow this method on the requested resource",
                headers={"Allow": ", ".join(sorted(allowed))},
            )
    raise StatusError(404, "the server could not find the requested resource")


def add_routes(app: web.Application) -> None:
    for path, handler in (
        ("/apis", handle_apis),
        (f"/apis/{GROUP}", handle_group),
        (f"/apis/{GROUP_VERSION}", handle_version),
    ):
        app.router.add_get(path, handler, allow_head=True)
        app.router.add_get(path + "/", handler, allow_head=True)
