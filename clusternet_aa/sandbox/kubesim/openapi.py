"""kubesim's OpenAPI documents: ``/openapi/v2`` and ``/openapi/v3`` (index and per path).

kubectl relies on them in ways that are easy to miss. ``kubectl explain`` (OpenAPI v3 since
1.27) finds a resource's kind from the ``x-kubernetes-group-version-kind`` of an operation on
its path, then the schema carrying the same extension. ``kubectl apply`` sends
``fieldValidation=Strict`` only when the PATCH operation for the kind lists a
``fieldValidation`` parameter (cli-runtime ``queryParamVerifierV3``), and computes a strategic
merge patch from v3 only when that PATCH accepts ``application/strategic-merge-patch+json``
(built-ins; CRDs get merge patches). So the paths here follow kube-apiserver's layout and
extensions for every served resource, and the schemas come from :mod:`openapi_schemas`.

Everything is a pure function of the served resources; :class:`OpenAPICache` memoises the
documents and their JSON per resource-set version, since building one walks hundreds of
definitions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from clusternet_aa.sandbox.kubesim import openapi_schemas, schemas
from clusternet_aa.sandbox.kubesim.openapi_schemas import Style, ref
from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo

_INFO = {"title": "Kubernetes", "version": schemas.KUBERNETES_SCHEMA_VERSION.split("-")[0]}
_MEDIA_TYPES = ("application/json", "application/yaml", "application/vnd.kubernetes.protobuf")
_WATCH_MEDIA_TYPES = (
    *_MEDIA_TYPES,
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
)
_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
)
_STRATEGIC = "application/strategic-merge-patch+json"

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_STATUS = _META + "Status"
_DELETE_OPTIONS = _META + "DeleteOptions"
_PATCH = _META + "Patch"
_WATCH_EVENT = _META + "WatchEvent"

#: Subresources whose kind is not the parent's: (group, version, kind, verbs).
_SUBRESOURCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "scale": ("autoscaling", "v1", "Scale", ("get", "update", "patch")),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "finalize": ("", "v1", "Namespace", ("update",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "binding": ("", "v1", "Binding", ("create",)),
}

_PARAMETERS: dict[str, tuple[str, str]] = {
    "allowWatchBookmarks": (
        "boolean",
        "allowWatchBookmarks requests watch events with type "
        '"BOOKMARK". Servers that do not implement bookmarks may ignore '
        "this flag.",
    ),
    "continue": (
        "string",
        "The continue option should be set when retrieving more results from the server.",
    ),
    "dryRun": (
        "string",
        "When present, indicates that modifications should not be persisted. "
        "Valid values are: - All: all dry run stages will be processed",
    ),
    "fieldManager": (
        "string",
        "fieldManager is a name associated with the actor or entity that is making these changes.",
    ),
    "fieldSelector": (
        "string",
        "A selector to restrict the list of returned objects by their "
        "fields. Defaults to everything.",
    ),
    "fieldValidation": (
        "string",
        "fieldValidation instructs the server on how to handle "
        "objects in the request (POST/PUT/PATCH) containing unknown or "
        "duplicate fields. Valid values are: - Ignore - Warn - Strict",
    ),
    "force": (
        "boolean",
        'Force is going to "force" Apply requests. It means user will '
        "re-acquire conflicting fields owned by other people.",
    ),
    "gracePeriodSeconds": (
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    "labelSelector": (
        "string",
        "A selector to restrict the list of returned objects by their "
        "labels. Defaults to everything.",
    ),
    "limit": ("integer", "limit is a maximum number of responses to return for a list call."),
    "orphanDependents": ("boolean", "Deprecated: please use the PropagationPolicy."),
    "pretty": ("string", "If 'true', then the output is pretty printed."),
    "propagationPolicy": (
        "string",
        "Whether and how garbage collection will be performed: "
        "'Orphan', 'Background' or 'Foreground'.",
    ),
    "resourceVersion": (
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    "resourceVersionMatch": (
        "string",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    "sendInitialEvents": (
        "boolean",
        "`sendInitialEvents=true` may be set together with `watch=true`.",
    ),
    "timeoutSeconds": ("integer", "Timeout for the list/watch call."),
    "watch": (
        "boolean",
        "Watch for changes to the described resources and return them as a "
        "stream of add, update, and remove notifications.",
    ),
}
_LIST_PARAMETERS = (
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
)
_WRITE_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation")
_DELETE_PARAMETERS = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")


@dataclass(frozen=True)
class _Operation:
    """One operation of a path, before it is rendered for v2 or v3."""

    method: str
    action: str
    gvk: tuple[str, str, str]
    response: str | None
    body: str | None = None
    patch_types: tuple[str, ...] = ()
    query: tuple[str, ...] = ()
    watch: bool = False
    statuses: tuple[str, ...] = ("200",)
    operation_id: str = ""


@dataclass
class _Path:
    path_parameters: tuple[str, ...]
    operations: list[_Operation] = field(default_factory=list)


def build_v2(resources: Sequence[ResourceInfo]) -> Obj:
    """A Swagger 2.0 document like kube-apiserver's ``/openapi/v2``, for all ``resources``."""
    definitions = _definitions(resources, "v2")
    paths: dict[str, _Path] = {}
    for resource in resources:
        paths.update(_resource_paths(resource))
    rendered = {path: _render_path(spec, "v2", definitions) for path, spec in paths.items()}
    return {
        "swagger": "2.0",
        "info": _INFO,
        "paths": dict(sorted(rendered.items())),
        "definitions": openapi_schemas.closure(_roots(rendered), definitions),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "in": "header",
                "name": "authorization",
                "type": "apiKey",
            }
        },
        "security": [{"BearerToken": []}],
    }


def v3_paths(resources: Sequence[ResourceInfo]) -> list[str]:
    """The document paths ``/openapi/v3`` lists, e.g. ``api/v1``, ``apis/apps/v1``."""
    group_versions = {_gv_path(r.group, r.version) for r in resources}
    groups = {f"apis/{r.group}" for r in resources if r.group}
    return sorted({"api", "apis", "version", *group_versions, *groups})


def build_v3_index(resources: Sequence[ResourceInfo]) -> Obj:
    """The ``/openapi/v3`` index: each document path with its content-hashed URL."""
    return _index({path: build_v3_group_version(resources, path) for path in v3_paths(resources)})


def build_v3_group_version(resources: Sequence[ResourceInfo], path: str) -> Obj | None:
    """The OpenAPI 3.0 document for ``path`` (``api/v1``, ``/openapi/v3/apis/apps/v1``...).

    None when kubesim serves nothing there (the server answers 404).
    """
    path = path.split("?", 1)[0].removeprefix("/openapi/v3").strip("/")
    if path not in v3_paths(resources):
        return None
    definitions = _definitions(resources, "v3")
    paths: dict[str, _Path] = {}
    if path in ("api", "apis", "version") or (path.count("/") == 1 and path.startswith("apis/")):
        paths["/" + path + "/"] = _discovery_path(path)
    else:
        paths["/" + path + "/"] = _Path(
            (), [_Operation("get", "", ("", "", ""), _META + "APIResourceList")]
        )
        for resource in resources:
            if _gv_path(resource.group, resource.version) == path:
                paths.update(_resource_paths(resource))
    rendered = {p: _render_path(spec, "v3", definitions) for p, spec in paths.items()}
    return {
        "openapi": "3.0.0",
        "info": _INFO,
        "paths": dict(sorted(rendered.items())),
        "components": {
            "schemas": openapi_schemas.closure(_roots(rendered), definitions),
            "securitySchemes": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey",
                }
            },
        },
    }


def document_bytes(document: Obj) -> bytes:
    """The JSON a document is served as; hashes are taken over exactly these bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def document_hash(document: Obj) -> str:
    """kube-apiserver's document hash: upper-case hex SHA-512 of the served JSON."""
    return hashlib.sha512(document_bytes(document)).hexdigest().upper()


@dataclass(frozen=True)
class CachedDocument:
    """A built document with its serialised JSON and hash (for ETag and ``?hash=``)."""

    document: Obj
    body: bytes
    hash: str


def _cached(document: Obj) -> CachedDocument:
    body = document_bytes(document)
    return CachedDocument(document, body, hashlib.sha512(body).hexdigest().upper())


class OpenAPICache:
    """Memoises the documents per resource-set version.

    The server bumps its version whenever the served resources change (a CRD added, changed
    or removed); any other call with the same version returns the documents built before.
    """

    def __init__(self) -> None:
        self._version: int | None = None
        self._v2: CachedDocument | None = None
        self._v3: dict[str, CachedDocument | None] = {}
        self._index: CachedDocument | None = None

    def _at(self, version: int) -> None:
        if version != self._version:
            self._version = version
            self._v2 = None
            self._v3 = {}
            self._index = None

    def v2(self, version: int, resources: Sequence[ResourceInfo]) -> CachedDocument:
        self._at(version)
        if self._v2 is None:
            self._v2 = _cached(build_v2(resources))
        return self._v2

    def v3(
        self, version: int, resources: Sequence[ResourceInfo], path: str
    ) -> CachedDocument | None:
        self._at(version)
        path = path.split("?", 1)[0].removeprefix("/openapi/v3").strip("/")
        if path not in self._v3:
            document = build_v3_group_version(resources, path)
            self._v3[path] = None if document is None else _cached(document)
        return self._v3[path]

    def v3_index(self, version: int, resources: Sequence[ResourceInfo]) -> CachedDocument:
        self._at(version)
        if self._index is None:
            hashes = {}
            for path in v3_paths(resources):
                cached = self.v3(version, resources, path)
                assert cached is not None
                hashes[path] = cached.hash
            self._index = _cached(_index_from_hashes(hashes))
        return self._index


def _index(documents: dict[str, Obj | None]) -> Obj:
    return _index_from_hashes(
        {path: document_hash(doc) for path, doc in documents.items() if doc is not None}
    )


def _index_from_hashes(hashes: dict[str, str]) -> Obj:
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            for path, digest in sorted(hashes.items())
        }
    }


# --- definitions ---------------------------------------------------------------------------


def _definitions(resources: Sequence[ResourceInfo], style: Style) -> dict[str, Obj]:
    definitions = openapi_schemas.builtin_definitions(style)
    extra: dict[str, Obj] = {}
    for resource in resources:
        if resource.schema is not None:
            extra.update(openapi_schemas.crd_definitions(resource, style))
    return {**definitions, **extra} if extra else definitions


def _definition_for(group: str, version: str, kind: str, crd: bool) -> str:
    if crd:
        return openapi_schemas.crd_definition_name(group, version, kind)
    return schemas.definition_name(group, version, kind) or ""


def _roots(rendered: dict[str, Obj]) -> Iterable[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    found.append(openapi_schemas.ref_name(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(rendered)
    return found


# --- paths ---------------------------------------------------------------------------------


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _discovery_path(path: str) -> _Path:
    if path == "api":
        response = _META + "APIVersions"
    elif path == "apis":
        response = _META + "APIGroupList"
    elif path == "version":
        response = "io.k8s.apimachinery.pkg.version.Info"
    else:
        response = _META + "APIGroup"
    return _Path((), [_Operation("get", "", ("", "", ""), response)])


def _resource_paths(resource: ResourceInfo) -> dict[str, _Path]:
    """kube-apiserver's paths for one resource, with only the operations its verbs allow."""
    crd = resource.schema is not None
    g, v, kind = resource.group, resource.version, resource.kind
    gvk = (g, v, kind)
    name = _definition_for(g, v, kind, crd) or None
    list_name = _definition_for(g, v, resource.list_kind, crd) or None
    verbs = set(resource.verbs)
    prefix = "/" + _gv_path(g, v)
    scope = f"{prefix}/namespaces/{{namespace}}" if resource.namespaced else prefix
    ns = ("namespace",) if resource.namespaced else ()
    collection = f"{scope}/{resource.resource}"
    item = f"{collection}/{{name}}"
    patch_types = _PATCH_TYPES if crd else (*_PATCH_TYPES, _STRATEGIC)
    paths: dict[str, _Path] = {}

    def add(path: str, params: tuple[str, ...], operation: _Operation) -> None:
        operation = dataclasses.replace(
            operation, operation_id=_operation_id(operation, resource, path)
        )
        paths.setdefault(path, _Path(params)).operations.append(operation)

    if "list" in verbs:
        add(
            collection,
            ns,
            _Operation("get", "list", gvk, list_name, query=_LIST_PARAMETERS, watch=True),
        )
        if resource.namespaced:
            add(
                f"{prefix}/{resource.resource}",
                (),
                _Operation("get", "list", gvk, list_name, query=_LIST_PARAMETERS, watch=True),
            )
    if "create" in verbs:
        add(
            collection,
            ns,
            _Operation(
                "post",
                "post",
                gvk,
                name,
                body=name,
                query=_WRITE_PARAMETERS,
                statuses=("200", "201", "202"),
            ),
        )
    if "deletecollection" in verbs:
        add(
            collection,
            ns,
            _Operation(
                "delete",
                "deletecollection",
                gvk,
                _STATUS,
                body=_DELETE_OPTIONS,
                query=(*_DELETE_PARAMETERS, *_LIST_PARAMETERS[1:-1]),
            ),
        )
    item_params = ("name", *ns)
    if "get" in verbs:
        add(item, item_params, _Operation("get", "get", gvk, name))
    if "update" in verbs:
        add(
            item,
            item_params,
            _Operation(
                "put", "put", gvk, name, body=name, query=_WRITE_PARAMETERS, statuses=("200", "201")
            ),
        )
    if "patch" in verbs:
        add(
            item,
            item_params,
            _Operation(
                "patch",
                "patch",
                gvk,
                name,
                body=_PATCH,
                patch_types=patch_types,
                query=(*_WRITE_PARAMETERS, "force"),
                statuses=("200", "201"),
            ),
        )
    if "delete" in verbs:
        add(
            item,
            item_params,
            _Operation(
                "delete",
                "delete",
                gvk,
                name,
                body=_DELETE_OPTIONS,
                query=_DELETE_PARAMETERS,
                statuses=("200", "202"),
            ),
        )
    if "watch" in verbs:
        watch_scope = (
            f"{prefix}/watch/namespaces/{{namespace}}"
            if resource.namespaced
            else (f"{prefix}/watch")
        )
        watch_query = _LIST_PARAMETERS
        add(
            f"{watch_scope}/{resource.resource}",
            ns,
            _Operation("get", "watchlist", gvk, _WATCH_EVENT, query=watch_query, watch=True),
        )
        add(
            f"{watch_scope}/{resource.resource}/{{name}}",
            item_params,
            _Operation("get", "watch", gvk, _WATCH_EVENT, query=watch_query, watch=True),
        )
        if resource.namespaced:
            add(
                f"{prefix}/watch/{resource.resource}",
                (),
                _Operation("get", "watchlist", gvk, _WATCH_EVENT, query=watch_query, watch=True),
            )
    for sub in resource.subresources:
        _add_subresource(add, f"{item}/{sub}", item_params, resource, sub, name, patch_types)
    return paths


#: Adds an operation to a path of the paths being built.
_Adder = Callable[[str, tuple[str, ...], _Operation], None]


def _add_subresource(
    add: _Adder,
    path: str,
    params: tuple[str, ...],
    resource: ResourceInfo,
    sub: str,
    parent_definition: str | None,
    patch_types: tuple[str, ...],
) -> None:
    verbs: tuple[str, ...]
    if sub == "status":
        gvk = (resource.group, resource.version, resource.kind)
        definition, verbs = parent_definition, ("get", "update", "patch")
    elif sub in _SUBRESOURCES:
        group, version, kind, verbs = _SUBRESOURCES[sub]
        gvk = (group, version, kind)
        definition = schemas.definition_name(group, version, kind)
    else:
        return  # connect-style subresources (exec, log, proxy) are not described here
    if "get" in verbs:
        add(path, params, _Operation("get", "get", gvk, definition))
    if "update" in verbs:
        add(
            path,
            params,
            _Operation(
                "put",
                "put",
                gvk,
                definition,
                body=definition,
                query=_WRITE_PARAMETERS,
                statuses=("200", "201"),
            ),
        )
    if "patch" in verbs:
        add(
            path,
            params,
            _Operation(
                "patch",
                "patch",
                gvk,
                definition,
                body=_PATCH,
                patch_types=patch_types,
                query=(*_WRITE_PARAMETERS, "force"),
                statuses=("200", "201"),
            ),
        )
    if "create" in verbs:
        add(
            path,
            params,
            _Operation(
                "post",
                "post",
                gvk,
                definition,
                body=definition,
                query=_WRITE_PARAMETERS,
                statuses=("200", "201", "202"),
            ),
        )


# --- rendering -----------------------------------------------------------------------------


def _render_path(spec: _Path, style: Style, definitions: dict[str, Obj]) -> Obj:
    rendered: Obj = {}
    for operation in spec.operations:
        rendered[operation.method] = _render_operation(operation, style, definitions)
    parameters = [_parameter(p, "path", style) for p in spec.path_parameters]
    parameters.append(_parameter("pretty", "query", style))
    rendered["parameters"] = parameters
    return rendered


def _parameter(name: str, where: str, style: Style) -> Obj:
    if where == "path":
        kind = "string"
        description = (
            "object name and auth scope, such as for teams and projects"
            if name == "namespace"
            else "name of the resource"
        )
    else:
        kind, description = _PARAMETERS[name]
    parameter: Obj = {"description": description, "in": where, "name": name}
    if where == "path":
        parameter["required"] = True
    if style == "v2":
        parameter.update({"type": kind, "uniqueItems": True})
    else:
        parameter["schema"] = {"type": kind, "uniqueItems": True}
    return parameter


def _render_operation(operation: _Operation, style: Style, definitions: dict[str, Obj]) -> Obj:
    rendered: Obj = {"description": f"{operation.action or 'get'} {operation.gvk[2]}".strip()}
    if operation.operation_id:
        rendered["operationId"] = operation.operation_id
    group, version, kind = operation.gvk
    tag = _tag(group, version)
    response_schema = (
        ref(operation.response, style)
        if operation.response and operation.response in definitions
        else None
    )
    parameters = [_parameter(name, "query", style) for name in operation.query]
    media = _WATCH_MEDIA_TYPES if operation.watch else _MEDIA_TYPES
    responses: Obj = {}
    for status in operation.statuses:
        description = {"200": "OK", "201": "Created", "202": "Accepted"}[status]
        responses[status] = _response(description, response_schema, media, style)
    responses["401"] = {"description": "Unauthorized"}
    if style == "v2":
        if operation.body:
            parameters.insert(
                0,
                {
                    "in": "body",
                    "name": "body",
                    "required": operation.method != "delete",
                    "schema": ref(operation.body, style),
                },
            )
        rendered["consumes"] = list(operation.patch_types or ("*/*",))
        rendered["produces"] = list(media)
        rendered["schemes"] = ["https"]
    elif operation.body:
        content_types = operation.patch_types or ("*/*",)
        rendered["requestBody"] = {
            "content": {t: {"schema": ref(operation.body, style)} for t in content_types},
            "required": operation.method != "delete",
        }
    if parameters:
        rendered["parameters"] = parameters
    rendered["responses"] = responses
    rendered["tags"] = [tag]
    if operation.action:
        rendered["x-kubernetes-action"] = operation.action
        rendered["x-kubernetes-group-version-kind"] = {
            "group": group,
            "kind": kind,
            "version": version,
        }
    return rendered


def _response(description: str, schema: Obj | None, media: tuple[str, ...], style: Style) -> Obj:
    response: Obj = {"description": description}
    if schema is None:
        return response
    if style == "v2":
        response["schema"] = schema
    else:
        response["content"] = {m: {"schema": schema} for m in media}
    return response


def _camel_group(group: str) -> str:
    if not group:
        return "Core"
    words = group.removesuffix(".k8s.io").replace("-", ".").split(".")
    return "".join(word[:1].upper() + word[1:] for word in words)


def _tag(group: str, version: str) -> str:
    camel = _camel_group(group)
    return f"{camel[:1].lower()}{camel[1:]}_{version}"


def _operation_id(operation: _Operation, resource: ResourceInfo, path: str) -> str:
    """kube's operation ids: ``readAppsV1NamespacedDeploymentStatus``,
    ``listCoreV1PodForAllNamespaces``, ``deleteRbacAuthorizationV1CollectionClusterRole``."""
    verb = {
        "get": "read",
        "post": "create",
        "put": "replace",
        "watchlist": "watch",
        "deletecollection": "delete",
    }.get(operation.action, operation.action)
    collection = "Collection" if operation.action == "deletecollection" else ""
    namespaced = "Namespaced" if "{namespace}" in path else ""
    sub = path.rsplit("/", 1)[-1].capitalize() if "/{name}/" in path else ""
    listing = "List" if operation.action == "watchlist" else ""
    everywhere = "ForAllNamespaces" if resource.namespaced and not namespaced else ""
    group = _camel_group(resource.group) + resource.version.capitalize()
    return f"{verb}{group}{collection}{namespaced}{resource.kind}{sub}{listing}{everywhere}"
