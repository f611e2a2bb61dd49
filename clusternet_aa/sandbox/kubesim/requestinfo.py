"""Parse a request URL into what it asks for, as kube-apiserver's ``RequestInfoFactory`` does.

Authorization and routing both read the result, so the parse must match kube-apiserver's
exactly: ``/api/v1/namespaces/x`` is the namespace ``x`` (resource ``namespaces``), while
``/api/v1/namespaces/x/pods`` lists pods in ``x``; a GET without a name is ``list`` and becomes
``watch`` with a true ``watch`` parameter; a field selector on ``metadata.name`` names the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clusternet_aa.sandbox.kubesim.types import KubesimError

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
#: Subresources of a namespace that are addressed as /namespaces/<name>/<subresource>.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, kw_only=True)
class RequestInfo:
    """The parsed request; ``parts`` keeps any path segments beyond the subresource."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()


def parse_bool(value: str, parameter: str) -> bool:
    """Go's ``strconv.ParseBool``, which kube-apiserver uses for query parameters."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise KubesimError(400, "BadRequest", f'invalid value "{value}" for parameter "{parameter}"')


def is_watch(query: Mapping[str, str]) -> bool:
    value = query.get("watch")
    return value is not None and value != "" and parse_bool(value, "watch")


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Classify ``method path?query``; never raises for unknown paths (routing 404s later)."""
    segments = list(path.strip("/").split("/")) if path.strip("/") else []
    non_resource = RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    if not segments or segments[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = segments[0], segments[1:]
    if prefix == "apis":
        if len(parts) < 3:  # /apis, /apis/<g>, /apis/<g>/<v>: discovery
            return non_resource
        group, version, parts = parts[0], parts[1], parts[2:]
    else:
        if len(parts) < 2:  # /api, /api/v1
            return non_resource
        group, version, parts = "", parts[0], parts[1:]

    verb = _METHOD_VERBS.get(method.upper(), method.lower())
    if parts and parts[0] == "watch" and verb == "get":
        verb, parts = "watch", parts[1:]
        if not parts:
            return non_resource

    namespace = ""
    if parts and parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0] if parts else ""
    name = parts[1] if len(parts) > 1 else ""
    subresource = parts[2] if len(parts) > 2 else ""
    extra = tuple(parts[3:])

    if not name:
        if verb == "get":
            verb = "watch" if is_watch(query) else "list"
        elif verb == "delete":
            verb = "deletecollection"
    elif verb == "get" and is_watch(query):
        verb = "watch"
    if verb in ("list", "watch") and not name:
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=extra,
    )


def _name_from_field_selector(selector: str) -> str:
    for term in selector.split(","):
        for op in ("==", "="):
            key, sep, value = term.partition(op)
            if sep and key.strip() == "metadata.name" and not key.endswith("!"):
                return value.strip()
    return ""
