"""Unknown-field detection (``fieldValidation``), CRD pruning and CRD schema checks.

kube-apiserver finds unknown fields while decoding: built-in kinds through strict JSON decoding
into Go structs, custom resources through structural-schema pruning. Either way the result is a
list of dotted paths (``spec.containers[0].foo``). With ``fieldValidation=Strict`` (what kubectl
sends by default, ``--validate=strict``) they fail the request; with ``Warn`` (the server's
default when the parameter is absent) each becomes a ``Warning: 299`` header; with ``Ignore``
they are dropped silently. Unknown fields are always dropped from what is stored.

kube also reports duplicate fields (``json: duplicate field "x"``); they are lost once the body
is decoded into a dict, so kubesim cannot see them unless the server checks the raw body.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

from clusternet_aa.sandbox.kubesim import fieldschema
from clusternet_aa.sandbox.kubesim.fieldschema import Node
from clusternet_aa.sandbox.kubesim.strategic_merge import go_format
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

__all__ = [
    "FIELD_VALIDATION_MODES",
    "prune",
    "unknown_fields",
    "validate_fields",
    "validate_schema",
]

FIELD_VALIDATION_MODES = ("Ignore", "Warn", "Strict")


# --- unknown fields and pruning --------------------------------------------------------------


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _walk_unknown(
    value: Any, node: Node | None, path: str, crd: bool
) -> Iterator[tuple[str, Any, str]]:
    """Yield (path, container, key) for every unknown field below ``value``."""
    if node is None:
        return
    if fieldschema.is_free_form(node, crd=crd) and "properties" not in node:
        return
    if isinstance(value, dict):
        properties = node.get("properties")
        additional = node.get("additionalProperties")
        embedded = bool(node.get("x-kubernetes-embedded-resource"))
        keep_unknown = fieldschema.preserves_unknown(node)
        declares_nothing = not isinstance(properties, Mapping) and not isinstance(
            additional, Mapping
        )
        if declares_nothing and (not crd or keep_unknown):
            return
        for key, child_value in value.items():
            child_path = _join(path, key)
            declared = (isinstance(properties, Mapping) and key in properties) or (
                embedded and key in ("apiVersion", "kind", "metadata")
            )
            if declared or isinstance(additional, Mapping):
                child_node = fieldschema.child(node, key)
                # ObjectMeta is a built-in definition, walked with built-in rules.
                child_crd = crd and not (embedded and key == "metadata")
                yield from _walk_unknown(child_value, child_node, child_path, child_crd)
            elif additional is True or keep_unknown:
                continue
            else:
                yield child_path, value, key
    elif isinstance(value, list):
        item_node = fieldschema.items(node)
        for i, item in enumerate(value):
            yield from _walk_unknown(item, item_node, f"{path}[{i}]", crd)


def unknown_fields(obj: Obj, resource: ResourceInfo) -> list[str]:
    """Dotted paths of the fields ``resource``'s schema does not declare.

    Built-ins keep document order (the order strict JSON decoding meets them); CRD paths are
    sorted, as the pruning pass reports them.
    """
    schema = fieldschema.root(resource)
    crd = resource.schema is not None
    paths = [p for p, _, _ in _walk_unknown(obj, schema, "", crd)]
    return sorted(paths) if crd else paths


def prune(obj: Obj, resource: ResourceInfo) -> Obj:
    """``obj`` without its unknown fields (a copy), as kube-apiserver stores it.

    For a CRD this is structural-schema pruning (``x-kubernetes-preserve-unknown-fields`` and
    ``additionalProperties`` keep content; ``apiVersion``, ``kind`` and ``metadata`` are always
    kept, ``metadata`` limited to ObjectMeta's fields). For a built-in it is what decoding into
    the Go type drops.
    """
    result = copy.deepcopy(obj)
    schema = fieldschema.root(resource)
    doomed = list(_walk_unknown(result, schema, "", resource.schema is not None))
    for _, container, key in doomed:
        container.pop(key, None)
    return result


def validate_fields(
    obj: Obj,
    resource: ResourceInfo,
    *,
    mode: str,
    verb: str = "create",
    patch: Any = None,
) -> list[str]:
    """Apply the ``fieldValidation`` directive to ``obj``; returns the warnings for ``Warn``.

    ``mode`` is the query parameter (empty means kube's default, ``Warn``). ``Strict`` raises
    the error kube-apiserver gives for ``verb``:

    * ``create`` / ``update``: 400 ``<Kind> in version "<v>" cannot be handled as a <Kind>:
      strict decoding error: unknown field "spec.foo"`` (transformDecodeError);
    * ``patch``: 422 Invalid, ``patch: Invalid value: "<patch as Go prints it>": strict
      decoding error: ...`` (what kubectl shows as "The request is invalid: patch: ...");
    * ``apply``: 400 ``failed to create typed patch object (<gv>, Kind=<Kind>): .spec.foo:
      field not declared in schema``.

    Warnings are the bare ``unknown field "spec.foo"`` texts; the server sends each as
    ``Warning: 299 - "<text>"``.
    """
    mode = mode or "Warn"
    if mode not in FIELD_VALIDATION_MODES:
        raise KubesimError(
            400,
            "BadRequest",
            f"fieldValidation parameter unsupported: {mode}. Supported values: "
            "Ignore, Warn, Strict",
        )
    if mode == "Ignore":
        return []
    paths = unknown_fields(obj, resource)
    messages = [f'unknown field "{p}"' for p in paths]
    if not messages or mode == "Warn":
        return messages
    strict = "strict decoding error: " + ", ".join(messages)
    if verb == "patch":
        detail = f"Invalid value: {_go_quote(go_format(patch))}: {strict}"
        raise KubesimError(
            422,
            "Invalid",
            f' "" is invalid: patch: {detail}',
            details={
                "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "patch"}]
            },
        )
    if verb == "apply":
        gvk = f"{resource.group_version}, Kind={resource.kind}"
        first = "." + paths[0].replace("[", ".[") if paths else ""
        raise KubesimError(
            400,
            "BadRequest",
            f"failed to create typed patch object ({gvk}): {first}: field not declared in schema",
        )
    raise KubesimError(
        400,
        "BadRequest",
        f'{resource.kind} in version "{resource.version}" cannot be handled as a '
        f"{resource.kind}: {strict}",
    )


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- CRD schema checks -----------------------------------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, expected: str, node: Node) -> bool:
    actual = _json_type(value)
    if actual == "null":
        return bool(node.get("nullable"))
    if expected == "number":
        return actual in ("integer", "number")
    return actual == expected


def _go_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def _go_value(value: Any) -> str:
    """How field.Invalid prints a bad value (%q for strings, %v for numbers and booleans)."""
    if isinstance(value, str):
        return _go_quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_number(value)
    return go_format(value)


def _check(value: Any, node: Node, path: str, out: list[tuple[str, str, str]]) -> None:
    """Collect (field, cause reason, cause message) for ``value`` against a CRD schema node."""
    display = path or "<root>"
    if fieldschema.is_int_or_string(node):
        if _json_type(value) not in ("integer", "string") and value is not None:
            out.append(
                _invalid(
                    path,
                    _json_type(value),
                    f"{display} in body must be of type integer,string: "
                    + _go_quote(_json_type(value)),
                )
            )
        return
    expected = node.get("type")
    if isinstance(expected, str) and not _type_ok(value, expected, node):
        actual = _json_type(value)
        out.append(
            _invalid(
                path, actual, f"{display} in body must be of type {expected}: {_go_quote(actual)}"
            )
        )
        return
    if value is None:
        return
    enum = node.get("enum")
    if isinstance(enum, list) and value not in enum:
        supported = ", ".join(_go_value(v) for v in enum)
        out.append(
            (
                path,
                "FieldValueNotSupported",
                f"Unsupported value: {_go_value(value)}: supported values: {supported}",
            )
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_bounds(value, node, path, display, out)
    pattern = node.get("pattern")
    if isinstance(value, str) and isinstance(pattern, str) and not re.search(pattern, value):
        out.append(_invalid(path, value, f"{display} in body should match '{pattern}'"))
    if isinstance(value, dict):
        required = node.get("required")
        if isinstance(required, list):
            for name in required:
                if name not in value:
                    out.append((_join(path, name), "FieldValueRequired", "Required value"))
        properties = node.get("properties")
        additional = node.get("additionalProperties")
        for key, child_value in value.items():
            if isinstance(properties, Mapping) and key in properties:
                _check(child_value, properties[key], _join(path, key), out)
            elif isinstance(additional, Mapping):
                _check(child_value, additional, _join(path, key), out)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        for i, item in enumerate(value):
            _check(item, node["items"], f"{path}[{i}]", out)


def _check_bounds(
    value: float, node: Node, path: str, display: str, out: list[tuple[str, str, str]]
) -> None:
    minimum = node.get("minimum")
    if isinstance(minimum, int | float):
        if node.get("exclusiveMinimum") and value <= minimum:
            out.append(
                _invalid(
                    path, value, f"{display} in body should be greater than {_go_number(minimum)}"
                )
            )
        elif value < minimum:
            out.append(
                _invalid(
                    path,
                    value,
                    f"{display} in body should be greater than or equal to {_go_number(minimum)}",
                )
            )
    maximum = node.get("maximum")
    if isinstance(maximum, int | float):
        if node.get("exclusiveMaximum") and value >= maximum:
            out.append(
                _invalid(
                    path, value, f"{display} in body should be less than {_go_number(maximum)}"
                )
            )
        elif value > maximum:
            out.append(
                _invalid(
                    path,
                    value,
                    f"{display} in body should be less than or equal to {_go_number(maximum)}",
                )
            )


def _invalid(path: str, bad_value: Any, detail: str) -> tuple[str, str, str]:
    return path, "FieldValueInvalid", f"Invalid value: {_go_value(bad_value)}: {detail}"


def validate_schema(obj: Obj, resource: ResourceInfo) -> None:
    """Check a custom resource against its CRD schema; 422 Invalid with causes like kube.

    Covers type (with ``nullable`` and int-or-string), ``required``, ``enum``, ``minimum`` /
    ``maximum`` (and their exclusive forms) and ``pattern``; CEL rules, formats and length
    limits are not checked. Built-in kinds are not checked here.
    """
    if resource.schema is None:
        return
    problems: list[tuple[str, str, str]] = []
    # apiVersion, kind and metadata are checked by the server, not by the CRD schema.
    implicit = ("apiVersion", "kind", "metadata")
    schema = dict(resource.schema)
    schema["required"] = [r for r in schema.get("required") or [] if r not in implicit]
    body = {k: v for k, v in obj.items() if k not in implicit}
    _check(body, schema, "", problems)
    if not problems:
        return
    name = str((obj.get("metadata") or {}).get("name", ""))
    errors = [f"{field}: {message}" for field, _, message in problems]
    summary = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    qualified = f"{resource.kind}.{resource.group}" if resource.group else resource.kind
    raise KubesimError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {summary}',
        details={
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [
                {"reason": reason, "message": message, "field": field}
                for field, reason, message in problems
            ],
        },
    )
