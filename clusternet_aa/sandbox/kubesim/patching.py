"""The four PATCH flavours of kube-apiserver, as pure functions on plain dicts.

``application/merge-patch+json`` (RFC 7386) and ``application/json-patch+json`` (RFC 6902)
live here; strategic merge patch and server-side apply have modules of their own and are
re-exported so the server needs this one import. Objects are never mutated: every function
works on a deep copy and returns the result.

JSON patch follows the library kube-apiserver uses (``gopkg.in/evanphx/json-patch.v4``) where
it differs from the RFC: a missing ``value`` means null, negative array indices count from the
end, and a failed operation is a 422 ``Invalid`` Status whose message is the generic
"the server rejected our request due to an error in our request" with the library's error as
the single ``UnexpectedServerResponse`` cause (``errors.NewGenericServerResponse``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from clusternet_aa.sandbox.kubesim.server_side_apply import apply_server_side, record_update
from clusternet_aa.sandbox.kubesim.strategic_merge import apply_strategic_merge_patch
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

__all__ = [
    "MAX_JSON_PATCH_OPERATIONS",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_server_side",
    "apply_strategic_merge_patch",
    "record_update",
]

#: kube-apiserver's maxJSONPatchOperations.
MAX_JSON_PATCH_OPERATIONS = 10000


def merge_patch_value(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch on any JSON values (the input values are not modified)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch_value(result.get(key), value)
    return copy.deepcopy(result)


def apply_merge_patch(target: Obj, patch: Any) -> Obj:
    """``application/merge-patch+json``: ``null`` deletes, objects merge, the rest replaces.

    A patch that is not a JSON object cannot produce an object, so it is a 400 as in kube
    (``jsonpatch.ErrBadJSONPatch``).
    """
    if not isinstance(patch, Mapping):
        raise KubesimError(400, "BadRequest", "Invalid JSON Patch")
    result = merge_patch_value(target, patch)
    assert isinstance(result, dict)
    return result


def create_merge_patch(original: Any, modified: Any) -> Any:
    """The RFC 7386 patch that turns ``original`` into ``modified`` (jsonpatch.CreateMergePatch).

    Used by tests and by anyone computing a patch from two versions; arrays are replaced whole.
    """
    if not isinstance(original, Mapping) or not isinstance(modified, Mapping):
        return copy.deepcopy(modified)
    patch: dict[str, Any] = {}
    for key in original:
        if key not in modified:
            patch[key] = None
    for key, value in modified.items():
        if key not in original:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(original[key], Mapping):
            sub = create_merge_patch(original[key], value)
            if sub:
                patch[key] = sub
        elif not _json_equal(original[key], value):
            patch[key] = copy.deepcopy(value)
    return patch


# --- RFC 6902 --------------------------------------------------------------------------------


class _PatchFailed(Exception):
    """An operation that does not apply; the text is evanphx/json-patch's."""


_MISSING = object()


def _invalid_patch(detail: str) -> KubesimError:
    return KubesimError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        details={"causes": [{"reason": "UnexpectedServerResponse", "message": detail}]},
    )


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1``, as after decoding with encoding/json."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _decode_pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _find_container(doc: Any, path: str) -> tuple[Any, str] | None:
    """evanphx findObject: the parent container of ``path`` and the last token, or None."""
    if not path.startswith("/"):
        return None
    parts = _decode_pointer(path)
    node = doc
    for part in parts[:-1]:
        if isinstance(node, dict):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, list):
            index = _array_index(part, len(node), allow_end=False)
            if index is None:
                return None
            node = node[index]
        else:
            return None
    if not isinstance(node, dict | list):
        return None
    return node, parts[-1]


def _array_index(token: str, length: int, *, allow_end: bool) -> int | None:
    try:
        index = int(token)
    except ValueError:
        return None
    if index < -length or index > length or (index == length and not allow_end):
        return None
    return index + length if index < 0 else index


def _invalid_index(token: str) -> _PatchFailed:
    return _PatchFailed(f"Unable to access invalid index: {token}: invalid index referenced")


def _get(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    index = _array_index(key, len(container), allow_end=False)
    if index is None:
        raise _invalid_index(key)
    return container[index]


def _add(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
        return
    if key == "-":
        container.append(value)
        return
    index = _array_index(key, len(container), allow_end=True)
    if index is None:
        raise _invalid_index(key)
    container.insert(index, value)


def _remove(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        if key not in container:
            raise _PatchFailed(f"Unable to remove nonexistent key: {key}: missing value")
        return container.pop(key)
    index = _array_index(key, len(container), allow_end=False)
    if index is None:
        raise _invalid_index(key)
    return container.pop(index)


def _op_path(op: Mapping[str, Any], field: str, kind: str) -> str:
    path = op.get(field)
    if not isinstance(path, str):
        raise _PatchFailed(f"{kind} operation failed to decode {field}")
    return path


def _locate(doc: Any, path: str, kind: str) -> tuple[Any, str]:
    found = _find_container(doc, path)
    if found is None:
        raise _PatchFailed(
            f'{kind} operation does not apply: doc is missing path: "{path}": missing value'
        )
    return found


def _apply_op(doc: Any, op: Mapping[str, Any]) -> None:
    kind = op.get("op")
    value = copy.deepcopy(op.get("value"))
    if kind == "add":
        path = _op_path(op, "path", "add")
        _add(*_locate(doc, path, "add"), value)
    elif kind == "remove":
        path = _op_path(op, "path", "remove")
        container, key = _locate(doc, path, "remove")
        try:
            _remove(container, key)
        except _PatchFailed as e:
            raise _PatchFailed(f"error in remove for path: '{path}': {e}") from None
    elif kind == "replace":
        path = _op_path(op, "path", "replace")
        container, key = _locate(doc, path, "replace")
        if isinstance(container, dict) and key not in container:
            raise _PatchFailed(
                f"replace operation does not apply: doc is missing key: {path}: missing value"
            )
        if isinstance(container, list):
            index = _array_index(key, len(container), allow_end=False)
            if index is None:
                raise _invalid_index(key)
            container[index] = value
        else:
            container[key] = value
    elif kind in ("move", "copy"):
        from_path = _op_path(op, "from", kind)
        path = _op_path(op, "path", kind)
        container, key = _locate(doc, from_path, kind)
        if kind == "move":
            try:
                moved = _remove(container, key)
            except _PatchFailed as e:
                raise _PatchFailed(f"error in move for path: '{from_path}': {e}") from None
        else:
            moved = _get(container, key)
            if moved is _MISSING:
                raise _PatchFailed(f"error in copy for from: '{from_path}': missing value")
            moved = copy.deepcopy(moved)
        _add(*_locate(doc, path, kind), moved)
    elif kind == "test":
        path = _op_path(op, "path", "test")
        container, key = _locate(doc, path, "test")
        current = _get(container, key)
        if current is _MISSING or current is None:
            if op.get("value") is None:
                return
        elif _json_equal(current, op.get("value")):
            return
        raise _PatchFailed(f"testing value {path} failed: test failed")
    else:
        raise _PatchFailed(f"Unexpected kind: {kind}")


def apply_json_patch(target: Obj, ops: Any) -> Obj:
    """``application/json-patch+json`` as kube-apiserver applies it.

    A body that is not a list of operation objects is 400 BadRequest (it fails to decode);
    more than 10000 operations is 413; an operation that does not apply is 422 Invalid.
    """
    if not isinstance(ops, list) or not all(isinstance(op, Mapping) for op in ops):
        kind = "object" if isinstance(ops, Mapping) else type(ops).__name__
        raise KubesimError(
            400,
            "BadRequest",
            f"json: cannot unmarshal {_json_kind(kind)} into Go value of type jsonpatch.Patch",
        )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise KubesimError(
            413,
            "RequestEntityTooLarge",
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS},"
            f" got {len(ops)}",
        )
    doc = copy.deepcopy(target)
    try:
        for op in ops:
            _apply_op(doc, op)
    except _PatchFailed as e:
        raise _invalid_patch(str(e)) from None
    if not isinstance(doc, dict):
        raise _invalid_patch("the patched document is not a JSON object")
    return doc


def _json_kind(python_kind: str) -> str:
    return {
        "object": "object",
        "str": "string",
        "int": "number",
        "float": "number",
        "bool": "bool",
        "NoneType": "null",
        "list": "array",
    }.get(python_kind, python_kind)


def decode_patch_body(body: bytes) -> Any:
    """Decode a JSON patch body; a syntax error is 400 as kube reports it."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise KubesimError(400, "BadRequest", f"error decoding patch: {e}") from None
