"""Minimal, valid OpenAPI documents for ``proxies.clusternet.io/v1alpha1``.

The parent's OpenAPI aggregation controllers fetch ``/openapi/v2`` and ``/openapi/v3`` (then
each group-version's document at the ``serverRelativeURL`` with its ``?hash=``) and merge them
into the parent's spec; an invalid document would spoil the merge, a missing one is tolerated
but leaves ``kubectl explain socket`` empty. The documents describe the one kind (``Socket``,
the connect options) and the connect paths, with kube's ``x-kubernetes-*`` annotations.

kube redirects a ``?hash=`` that does not match the current document; the hub never answers
with a redirect, so it serves the current document uncached instead.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from clusternet_aa.apiserver.discovery import GROUP_VERSION
from clusternet_aa.proxy.ports import GROUP, VERSION

SOCKET_DEFINITION = "com.github.clusternet.clusternet.pkg.apis.proxies.v1alpha1.Socket"
_GVK = [{"group": GROUP, "version": VERSION, "kind": "Socket"}]
_TITLE = "clusternet-hub"

Obj = dict[str, Any]


def _socket_schema() -> Obj:
    return {
        "description": "Socket is the query-options object of the sockets connect endpoints.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "path": {"type": "string", "description": "Path is the URL path to use."},
        },
        "x-kubernetes-group-version-kind": _GVK,
    }


def _path_parameter(name: str, description: str, v3: bool) -> Obj:
    parameter: Obj = {"name": name, "in": "path", "required": True, "description": description}
    if v3:
        parameter["schema"] = {"type": "string", "uniqueItems": True}
    else:
        parameter["type"] = "string"
        parameter["uniqueItems"] = True
    return parameter


def _operations(path_param: bool, v3: bool) -> Obj:
    operations: Obj = {}
    for method in ("get", "post", "put", "patch", "delete", "head", "options"):
        suffix = "SocketProxyWithPath" if path_param else "Socket"
        operation: Obj = {
            "description": "connect " + method.upper() + " requests to the cluster's Socket",
            "operationId": f"connect{method.capitalize()}ProxiesClusternetIoV1alpha1{suffix}",
            "tags": ["proxiesClusternetIo_v1alpha1"],
            "x-kubernetes-action": "connect",
            "x-kubernetes-group-version-kind": _GVK[0],
        }
        ok: Obj = {"description": "OK"}
        if v3:
            ok["content"] = {"*/*": {"schema": {"type": "string"}}}
        else:
            operation["produces"] = ["*/*"]
            operation["consumes"] = ["*/*"]
            operation["schemes"] = ["https"]
            ok["schema"] = {"type": "string"}
        operation["responses"] = {"200": ok, "401": {"description": "Unauthorized"}}
        operations[method] = operation
    parameters = [_path_parameter("name", "the cluster ID", v3)]
    if path_param:
        parameters.append(_path_parameter("path", "the path to proxy to", v3))
    operations["parameters"] = parameters
    return operations


def _paths(v3: bool) -> Obj:
    base = f"/apis/{GROUP_VERSION}/sockets/{{name}}"
    return {
        base: _operations(False, v3),
        base + "/proxy/{path}": _operations(True, v3),
    }


def swagger_v2() -> Obj:
    return {
        "swagger": "2.0",
        "info": {"title": _TITLE, "version": VERSION},
        "paths": _paths(v3=False),
        "definitions": {SOCKET_DEFINITION: _socket_schema()},
    }


def openapi_v3_group_version() -> Obj:
    return {
        "openapi": "3.0.0",
        "info": {"title": _TITLE, "version": VERSION},
        "paths": _paths(v3=True),
        "components": {"schemas": {SOCKET_DEFINITION: _socket_schema()}},
    }


class OpenAPI:
    """Pre-rendered documents (they never change while the hub runs) and their handlers."""

    def __init__(self) -> None:
        self.v2 = json.dumps(swagger_v2()).encode()
        self.v3_gv = json.dumps(openapi_v3_group_version()).encode()
        self.v3_hash = hashlib.sha512(self.v3_gv).hexdigest().upper()
        relative = f"/openapi/v3/apis/{GROUP_VERSION}?hash={self.v3_hash}"
        self.v3_root = json.dumps(
            {"paths": {f"apis/{GROUP_VERSION}": {"serverRelativeURL": relative}}}
        ).encode()
        self.v2_etag = '"' + hashlib.sha512(self.v2).hexdigest().upper() + '"'

    @staticmethod
    def _json(
        body: bytes, etag: str | None = None, cache: str = "no-cache, private"
    ) -> web.Response:
        response = web.Response(body=body)
        response.headers["Content-Type"] = "application/json"
        response.headers["Cache-Control"] = cache
        if etag is not None:
            response.headers["ETag"] = etag
        return response

    async def handle_v2(self, request: web.Request) -> web.Response:
        return self._json(self.v2, self.v2_etag)

    async def handle_v3(self, request: web.Request) -> web.Response:
        return self._json(self.v3_root)

    async def handle_v3_group_version(self, request: web.Request) -> web.Response:
        etag = f'"{self.v3_hash}"'
        if request.query.get("hash") == self.v3_hash:
            return self._json(self.v3_gv, etag, "public, immutable")
        return self._json(self.v3_gv, etag)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/openapi/v2", self.handle_v2)
        app.router.add_get("/openapi/v3", self.handle_v3)
        app.router.add_get(f"/openapi/v3/apis/{GROUP_VERSION}", self.handle_v3_group_version)
