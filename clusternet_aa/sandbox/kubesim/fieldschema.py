"""Navigate the schema of a resource one field at a time.

Strategic merge patch, server-side apply, unknown-field detection and pruning all walk an object
alongside its schema. Built-in kinds take their schema from :mod:`schemas` (JSON Schema with
``$ref`` links and the ``x-kubernetes-*`` extensions); a CRD takes it from the version's
``openAPIV3Schema``. This module hides the difference: a node is a plain dict with every
``$ref`` resolved, and the CRD root behaves as an embedded resource (``apiVersion``, ``kind``
and ``metadata`` are implicit, and ``metadata`` is the built-in ObjectMeta).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clusternet_aa.sandbox.kubesim import schemas
from clusternet_aa.sandbox.kubesim.types import ResourceInfo

#: A schema node with its ``$ref`` resolved.
Node = Mapping[str, Any]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_EMBEDDED = "x-kubernetes-embedded-resource"
_STRING: Node = {"type": "string"}


def root(resource: ResourceInfo) -> Node | None:
    """The schema of a whole object of ``resource``, or None when none is known."""
    if resource.schema is not None:
        return {**resource.schema, _EMBEDDED: True}
    name = schemas.definition_name(resource.group, resource.version, resource.kind)
    return schemas.definitions()[name] if name else None


def resolve(node: Node) -> Node:
    """Follow ``$ref`` links; keys next to the ``$ref`` (patch strategy...) win."""
    while "$ref" in node:
        target = schemas.resolve_ref(str(node["$ref"]))
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def child(node: Node | None, name: str) -> Node | None:
    """The schema of field ``name`` of an object node (None when not declared)."""
    if node is None:
        return None
    if node.get(_EMBEDDED):
        if name == "metadata":
            return schemas.definitions()[OBJECT_META]
        if name in ("apiVersion", "kind"):
            return _STRING
    properties = node.get("properties")
    if isinstance(properties, Mapping) and name in properties:
        return resolve(properties[name])
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        return resolve(additional)
    return None


def items(node: Node | None) -> Node | None:
    """The schema of the elements of a list node."""
    if node is None:
        return None
    item = node.get("items")
    return resolve(item) if isinstance(item, Mapping) else None


def types(node: Node) -> set[str]:
    """The declared JSON types (built-in schemas list ``"null"`` too; it is dropped here)."""
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if t != "null"}
    return set()


def is_int_or_string(node: Node) -> bool:
    if node.get("x-kubernetes-int-or-string"):
        return True
    options = node.get("oneOf") or node.get("anyOf")
    if isinstance(options, list):
        kinds = set().union(*(types(resolve(o)) for o in options if isinstance(o, Mapping)))
        return bool(kinds) and kinds <= {"string", "integer", "number"}
    return False


def patch_strategies(node: Node | None) -> list[str]:
    if node is None:
        return []
    value = node.get("x-kubernetes-patch-strategy")
    return [s for s in str(value).split(",") if s] if value else []


def patch_merge_key(node: Node | None) -> str:
    if node is None:
        return ""
    return str(node.get("x-kubernetes-patch-merge-key") or "")


def list_type(node: Node | None) -> str:
    """``atomic``, ``set`` or ``map``; a list with a patch merge key is a map (kube's openapi)."""
    if node is None:
        return "atomic"
    declared = node.get("x-kubernetes-list-type")
    if declared:
        return str(declared)
    if patch_merge_key(node) and "merge" in patch_strategies(node):
        return "map"
    return "atomic"


def list_map_keys(node: Node | None) -> list[str]:
    if node is None:
        return []
    keys = node.get("x-kubernetes-list-map-keys")
    if isinstance(keys, list) and keys:
        return [str(k) for k in keys]
    merge_key = patch_merge_key(node)
    return [merge_key] if merge_key else []


def is_atomic_map(node: Node | None) -> bool:
    return node is not None and node.get("x-kubernetes-map-type") == "atomic"


def preserves_unknown(node: Node | None) -> bool:
    return node is not None and bool(node.get("x-kubernetes-preserve-unknown-fields"))


def is_free_form(node: Node | None, *, crd: bool) -> bool:
    """True when any content is accepted below ``node`` without being checked or pruned.

    A built-in object with neither ``properties`` nor ``additionalProperties``
    (``RawExtension``, ``FieldsV1``, apiextensions ``JSON``) is free-form. A CRD object is
    free-form only with ``x-kubernetes-preserve-unknown-fields: true``; otherwise undeclared
    fields are unknown (and pruned), as for structural schemas.
    """
    if node is None:
        return not crd
    if preserves_unknown(node):
        return True
    if crd:
        return False
    if not types(node) and "properties" not in node and "items" not in node:
        return not is_int_or_string(node)
    return (
        "object" in types(node)
        and "properties" not in node
        and not isinstance(node.get("additionalProperties"), Mapping)
    )
