"""Schema definitions for kubesim's OpenAPI documents, in the forms kube-apiserver serves.

The built-in definitions come from kubernetes-validate (:mod:`schemas`), which ships them as
JSON Schema 2020-12 for validators: ``$defs`` refs, nullable types (``["string", "null"]``),
``enum`` pinned on ``apiVersion`` and ``kind``, ``oneOf`` for IntOrString and Quantity. kubectl
reads the OpenAPI forms instead, so we convert: Swagger 2.0 (``#/definitions/`` refs, plain
types) for ``/openapi/v2``, and OpenAPI 3.0 (``#/components/schemas/`` refs, a ``$ref`` with
siblings wrapped in ``allOf``, as kube-openapi's v3 builder does) for ``/openapi/v3``.
CRD schemas (a version's ``openAPIV3Schema``) are completed the way the apiextensions builder
does: ``apiVersion``, ``kind`` and ``metadata`` properties, the group-version-kind extension,
and a ``<Kind>List`` definition.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Literal

from clusternet_aa.sandbox.kubesim import schemas
from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo

#: Which document a schema is converted for.
Style = Literal["v2", "v3"]

_PREFIX: dict[Style, str] = {"v2": "#/definitions/", "v3": "#/components/schemas/"}

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
LIST_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"

_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DOC = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_INT_OR_STRING_DOC = (
    "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML "
    "marshalling and unmarshalling, it produces or consumes the inner type.  This allows you "
    "to have, for example, a JSON field that can accept a name or number."
)
_QUANTITY_DOC = (
    "Quantity is a fixed-point representation of a number. It provides convenient "
    "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() "
    "accessors.\n\nThe serialization format is:\n\n``` <quantity>        ::= "
    "<signedNumber><suffix>\n```"
)

#: Types with custom JSON forms: kube-openapi emits these instead of their Go structure.
_CUSTOM: dict[str, dict[Style, Obj]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
        "v2": {"description": _INT_OR_STRING_DOC, "type": "string", "format": "int-or-string"},
        "v3": {
            "description": _INT_OR_STRING_DOC,
            "format": "int-or-string",
            "oneOf": [{"type": "integer"}, {"type": "string"}],
        },
    },
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {
        "v2": {"description": _QUANTITY_DOC, "type": "string"},
        "v3": {"description": _QUANTITY_DOC, "oneOf": [{"type": "string"}, {"type": "number"}]},
    },
}

#: Keys Swagger 2.0 schemas do not have; kube drops them from CRD schemas in /openapi/v2.
_NOT_IN_V2 = frozenset({"nullable", "oneOf", "anyOf", "not"})


def ref(name: str, style: Style) -> Obj:
    """A reference to definition ``name`` in a document of ``style``."""
    return {"$ref": _PREFIX[style] + name}


def ref_name(reference: str) -> str:
    """The definition name a ``$ref`` of either style (or ``#/$defs/``) points at."""
    return reference.rsplit("/", 1)[-1]


@functools.cache
def builtin_definitions(style: Style) -> dict[str, Obj]:
    """Every built-in definition converted for ``style`` (computed once; treat as read-only)."""
    converted: dict[str, Obj] = {}
    for name, definition in schemas.definitions().items():
        custom = _CUSTOM.get(name)
        if custom is not None:
            converted[name] = custom[style]
            continue
        result = _convert(definition, style)
        if "x-kubernetes-group-version-kind" in definition:
            # kubernetes-validate pins apiVersion/kind with an enum; kube does not.
            for key in ("apiVersion", "kind"):
                prop = result.get("properties", {}).get(key)
                if isinstance(prop, dict):
                    prop.pop("enum", None)
        converted[name] = result
    return converted


def _convert(schema: Any, style: Style) -> Any:
    if isinstance(schema, list):
        return [_convert(item, style) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = _PREFIX[style] + ref_name(value)
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if types:
                out[key] = types[0]
        elif key == "properties":
            out[key] = {name: _convert(prop, style) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "oneOf", "anyOf", "not"):
            out[key] = _convert(value, style)
        else:
            out[key] = value
    if style == "v3" and "$ref" in out and len(out) > 1:
        return {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def crd_definition_name(group: str, version: str, kind: str) -> str:
    """The name the apiextensions builder gives a CRD kind (``io.example.v1.Widget``)."""
    reversed_group = ".".join(reversed(group.split(".")))
    return f"{reversed_group}.{version}.{kind}"


def crd_definitions(resource: ResourceInfo, style: Style) -> dict[str, Obj]:
    """The definitions a CRD version adds: its kind and its list kind."""
    assert resource.schema is not None
    name = crd_definition_name(resource.group, resource.version, resource.kind)
    schema = _crd_schema(resource.schema, style)
    schema.setdefault("type", "object")
    properties: Obj = dict(schema.get("properties", {}))
    properties["apiVersion"] = {"description": _API_VERSION_DOC, "type": "string"}
    properties["kind"] = {"description": _KIND_DOC, "type": "string"}
    properties["metadata"] = _described_ref(OBJECT_META, _METADATA_DOC, style)
    schema["properties"] = dict(sorted(properties.items()))
    schema["x-kubernetes-group-version-kind"] = [_gvk(resource, resource.kind)]
    listing: Obj = {
        "description": f"{resource.kind}List is a list of {resource.kind}",
        "properties": {
            "apiVersion": {"description": _API_VERSION_DOC, "type": "string"},
            "items": {
                "description": f"List of {resource.resource}. More info: "
                "https://git.k8s.io/community/contributors/devel/api-conventions.md",
                "items": ref(name, style),
                "type": "array",
            },
            "kind": {"description": _KIND_DOC, "type": "string"},
            "metadata": _described_ref(LIST_META, _METADATA_DOC, style),
        },
        "required": ["items"],
        "type": "object",
        "x-kubernetes-group-version-kind": [_gvk(resource, resource.list_kind)],
    }
    return {name: schema, name + "List": listing}


def _crd_schema(schema: Any, style: Style) -> Any:
    """A CRD's structural schema, minus the parts Swagger 2.0 cannot say (for v2)."""
    if isinstance(schema, list):
        return [_crd_schema(item, style) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Obj = {}
    for key, value in schema.items():
        if style == "v2" and key in _NOT_IN_V2:
            continue
        if key == "properties":
            out[key] = {name: _crd_schema(prop, style) for name, prop in value.items()}
        elif key in ("items", "additionalProperties", "allOf", "oneOf", "anyOf", "not"):
            out[key] = _crd_schema(value, style)
        else:
            out[key] = value
    if style == "v2" and out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    return out


def _described_ref(name: str, description: str, style: Style) -> Obj:
    if style == "v3":
        return {"allOf": [ref(name, style)], "description": description}
    return {**ref(name, style), "description": description}


def _gvk(resource: ResourceInfo, kind: str) -> Obj:
    return {"group": resource.group, "kind": kind, "version": resource.version}


def closure(roots: Iterable[str], definitions: dict[str, Obj]) -> dict[str, Obj]:
    """The named definitions and all they reference, transitively, sorted by name."""
    found: dict[str, Obj] = {}
    pending = [name for name in roots if name in definitions]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found[name] = definitions[name]
        pending.extend(
            target
            for target in _references(definitions[name])
            if target in definitions and target not in found
        )
    return dict(sorted(found.items()))


def _references(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield ref_name(value)
            else:
                yield from _references(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _references(item)
