"""Strategic merge patch, ported from ``k8s.io/apimachinery/pkg/util/strategicpatch``.

kube-apiserver applies a ``application/strategic-merge-patch+json`` body with
``mergeMap(original, patch, schema, MergeOptions{MergeParallelList: true,
IgnoreUnmatchedNulls: true})``. The field metadata (``patchStrategy`` and ``patchMergeKey``)
comes from the built-in schemas' ``x-kubernetes-patch-strategy`` and
``x-kubernetes-patch-merge-key``. ``kubectl apply`` (client-side) sends a three-way patch
with ``$setElementOrder/<list>`` directives, ``$retainKeys``, ``$patch: delete`` elements and
``$deleteFromPrimitiveList/<list>``; all of them are handled here, including kube's ordering of
merged lists (``normalizeElementOrder`` and ``mergeSortedSlice``: items named by the patch come
in the patch's order, interleaved with the server-only items in their live order).

Custom resources have no patch metadata, so kube-apiserver refuses strategic merge patch for
them with 415; :func:`apply_strategic_merge_patch` does the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from clusternet_aa.sandbox.kubesim import fieldschema
from clusternet_aa.sandbox.kubesim.fieldschema import Node
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

__all__ = ["apply_strategic_merge_patch", "go_format", "strategic_merge"]

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ELEMENT_ORDER = "$setElementOrder/"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"

#: The media types kube-apiserver accepts for PATCH on a custom resource.
CRD_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


class PatchError(Exception):
    """A patch kube rejects; ``code`` 400 for a malformed patch, 422 for one that cannot apply."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def _bad_request(message: str) -> PatchError:
    return PatchError(message, 400)


ERR_BAD_RETAIN_KEYS = "invalid patch format of retainKeys"
ERR_BAD_SET_ELEMENT_ORDER = "invalid patch format of setElementOrder list"
ERR_NO_LIST_OF_LISTS = "lists of lists are not supported"


def apply_strategic_merge_patch(target: Obj, patch: Obj, resource: ResourceInfo) -> Obj:
    """Apply ``patch`` to ``target`` as kube-apiserver does for a built-in ``resource``."""
    if resource.schema is not None:
        raise KubesimError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            + ", ".join(CRD_PATCH_TYPES),
        )
    if not isinstance(patch, dict):
        raise KubesimError(400, "BadRequest", "invalid JSON document")
    try:
        return strategic_merge(target, patch, fieldschema.root(resource))
    except PatchError as e:
        if e.code == 400:
            raise KubesimError(400, "BadRequest", str(e)) from None
        raise KubesimError(422, "Invalid", str(e)) from None


def strategic_merge(target: Obj, patch: Obj, schema: Node | None) -> Obj:
    """The schema-driven merge itself (no copy of the caller's values is modified)."""
    return _merge_map(copy.deepcopy(target), copy.deepcopy(patch), schema)


def _retain_keys_strategy(node: Node | None) -> str:
    """extractRetainKeysPatchStrategy: the strategy once ``retainKeys`` is set aside."""
    strategies = fieldschema.patch_strategies(node)
    rest = [s for s in strategies if s != "retainKeys"]
    if len(rest) > 1:
        raise PatchError(f"unexpected patch strategy: {','.join(strategies)}")
    return rest[0] if rest else ""


def _merge_map(original: dict[str, Any], patch: dict[str, Any], schema: Node | None) -> Obj:
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        if directive == "replace":
            del patch[DIRECTIVE]
            replaced: Obj = _without_directives(patch)
            return replaced
        if directive == "delete":
            return {}
        raise _bad_request(f"unknown patch type: {directive} in map: {go_format(patch)}")

    _apply_retain_keys(original, patch)
    _merge_set_element_order(original, patch, schema)

    for key, patch_value in list(patch.items()):
        if key.startswith(SET_ELEMENT_ORDER):
            continue
        is_delete_list = key.startswith(DELETE_FROM_PRIMITIVE_LIST)
        if is_delete_list:
            key = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
        elif key.startswith("$"):
            # Unknown directives end up as unknown fields that kube's typed decoding drops.
            continue

        if patch_value is None:
            original.pop(key, None)
            continue

        field_node = fieldschema.child(schema, key)
        if key not in original or not _same_kind(original[key], patch_value):
            if not is_delete_list:
                original[key] = _fresh_value(patch_value, field_node)
            continue

        strategy = _retain_keys_strategy(field_node)
        current = original[key]
        if isinstance(current, dict):
            if strategy == "replace":
                original[key] = _without_directives(patch_value)
            else:
                original[key] = _merge_map(current, patch_value, field_node)
        elif isinstance(current, list):
            original[key] = _merge_slice_handler(
                current, patch_value, field_node, strategy, is_delete_list
            )
        else:
            original[key] = patch_value
    return original


def _same_kind(a: Any, b: Any) -> bool:
    """reflect.TypeOf equality after encoding/json decoding (all numbers are float64)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict)
    if isinstance(a, list) or isinstance(b, list):
        return isinstance(a, list) and isinstance(b, list)
    return True


def _fresh_value(patch_value: Any, field_node: Node | None) -> Any:
    """A patch value for a field the original lacks: taken whole, nulls discarded.

    Directives inside it are resolved against an empty original, which is what kube's typed
    decoding of the result amounts to (leftover ``$`` keys are unknown fields it drops).
    """
    if isinstance(patch_value, dict):
        return _merge_map({}, patch_value, field_node)
    if isinstance(patch_value, list):
        strategy = _retain_keys_strategy(field_node)
        if strategy == "merge":
            return _merge_slice_handler([], patch_value, field_node, strategy, False)
        return _without_directives(_discard_nulls(patch_value))
    return patch_value


def _discard_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _discard_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_discard_nulls(v) for v in value]
    return value


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """applyRetainKeysDirective: drop the original's keys the ``$retainKeys`` list omits."""
    if RETAIN_KEYS not in patch:
        return
    retain = patch.pop(RETAIN_KEYS)
    if not isinstance(retain, list):
        raise _bad_request(ERR_BAD_RETAIN_KEYS)
    keep = {k for k in retain if isinstance(k, str)}
    for key, value in patch.items():
        if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
            continue
        if key not in keep:
            raise _bad_request(ERR_BAD_RETAIN_KEYS)
    for key in list(original):
        if key not in keep:
            del original[key]


def _merge_set_element_order(
    original: dict[str, Any], patch: dict[str, Any], schema: Node | None
) -> None:
    """mergePatchIntoOriginal: merge each list named by ``$setElementOrder/<list>`` and order it.

    Precedence of order: ``$setElementOrder`` list, then the patch list, then the live list.
    """
    for directive_key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        order = patch[directive_key]
        if not isinstance(order, list):
            raise _bad_request(ERR_BAD_SET_ELEMENT_ORDER)
        key = directive_key[len(SET_ELEMENT_ORDER) :]
        found_original = key in original and original[key] is not None
        found_patch = key in patch and patch[key] is not None
        original_list = original.get(key) if found_original else []
        patch_list = patch.get(key) if found_patch else []
        if not isinstance(original_list, list) or not isinstance(patch_list, list):
            raise _bad_request(ERR_BAD_SET_ELEMENT_ORDER)
        field_node = fieldschema.child(schema, key)
        merge_key = fieldschema.patch_merge_key(field_node)
        strategy = _retain_keys_strategy(field_node)
        _validate_patch_with_set_order(patch_list, order, merge_key)
        if not found_original and not found_patch:
            continue
        if not found_original:
            merged = _merge_slice_handler([], patch_list, field_node, strategy, False)
        elif not found_patch:
            merged = original_list
        else:
            merged = _merge_slice_handler(original_list, patch_list, field_node, strategy, False)
        is_map = _element_kind(original_list, patch_list) == "map"
        mk = merge_key if is_map else ""
        in_order, server_only = _partition(merged, order, mk)
        original[key] = _normalize_element_order(in_order, server_only, order, original_list, mk)
        patch.pop(key, None)


def _validate_patch_with_set_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """validatePatchWithSetOrderList: the patch list follows the order list's relative order."""
    if not order or not patch_list:
        return
    if merge_key:
        non_delete = [
            item
            for item in patch_list
            if not (isinstance(item, dict) and item.get(DIRECTIVE) == "delete")
        ]
    else:
        non_delete = list(patch_list)
    patch_index = order_index = 0
    while patch_index < len(non_delete) and order_index < len(order):
        item = non_delete[patch_index]
        if isinstance(item, dict) and DIRECTIVE in item:
            patch_index += 1
            continue
        if _key_of(item, merge_key) == _key_of(order[order_index], merge_key):
            patch_index += 1
        order_index += 1
    if patch_index < len(non_delete) and order_index >= len(order):
        raise PatchError(
            f"The order in patch list:\n{patch_list}\n doesn't match {SET_ELEMENT_ORDER} "
            f"list:\n{order}\n"
        )


def _key_of(item: Any, merge_key: str) -> Any:
    """What identifies a list element: its merge key value, or the scalar itself."""
    if merge_key:
        return item.get(merge_key) if isinstance(item, dict) else None
    return _hashable(item)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, bool):
        return ("bool", value)
    return value


def _element_kind(*lists: list[Any]) -> str:
    """sliceElementType: ``map``, ``scalar`` or ``empty``; lists of lists are refused."""
    kind = "empty"
    for lst in lists:
        for item in lst:
            if isinstance(item, list):
                raise PatchError(ERR_NO_LIST_OF_LISTS)
            this = "map" if isinstance(item, dict) else "scalar"
            if kind not in ("empty", this):
                raise PatchError(f"slice of mismatched types in {lst!r}")
            kind = this
    return kind


def _merge_slice_handler(
    original: list[Any],
    patch: Any,
    field_node: Node | None,
    strategy: str,
    is_delete_list: bool,
) -> list[Any]:
    if not isinstance(patch, list):
        raise PatchError(f"expected a list, got {type(patch).__name__}")
    if strategy == "merge" or is_delete_list:
        return _merge_slice(original, patch, field_node, is_delete_list)
    replaced: list[Any] = _without_directives(_discard_nulls(patch))
    return replaced


def _merge_slice(
    original: list[Any], patch: list[Any], field_node: Node | None, is_delete_list: bool
) -> list[Any]:
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    merge_key = fieldschema.patch_merge_key(field_node)
    item_node = fieldschema.items(field_node)
    if kind != "map":
        if is_delete_list:
            doomed = {_hashable(v) for v in patch}
            return [v for v in original if _hashable(v) not in doomed]
        merged: list[Any] = []
        seen: set[Any] = set()
        for value in [*original, *patch]:
            if _hashable(value) not in seen:
                seen.add(_hashable(value))
                merged.append(value)
        in_patch, server_only = _partition(merged, patch, "")
        return _normalize_element_order(in_patch, server_only, patch, original, "")

    if not merge_key:
        raise PatchError("cannot merge lists without merge key")
    original, patch = _merge_special_elements(original, patch, merge_key)
    merged = list(original)
    for item in patch:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        index = _find_by_key(merged, merge_key, item[merge_key])
        if index >= 0:
            merged[index] = _merge_map(merged[index], item, item_node)
        else:
            merged.append(_merge_map({}, item, item_node))
    in_patch, server_only = _partition(merged, patch, merge_key)
    return _normalize_element_order(in_patch, server_only, patch, original, merge_key)


def _no_merge_key(item: Any, merge_key: str) -> PatchError:
    return PatchError(f"map: {go_format(item)} does not contain declared merge key: {merge_key}")


def go_format(value: Any) -> str:
    """Go's ``%v`` of a decoded JSON value, for error texts."""
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{go_format(v)}" for k, v in sorted(value.items()))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _merge_special_elements(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """mergeSliceWithSpecialElements: ``$patch: delete`` and ``$patch: replace`` elements."""
    plain: list[Any] = []
    replace = False
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"expected a map in {patch!r}")
        if DIRECTIVE not in item:
            plain.append(item)
            continue
        directive = item[DIRECTIVE]
        if directive == "delete":
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            original = [
                o
                for o in original
                if not (isinstance(o, dict) and _key_equal(o.get(merge_key), item[merge_key]))
            ]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise _bad_request(f"unknown patch type: {directive} in map: {go_format(item)}")
    if replace:
        return [_without_directives(i) for i in plain], []
    return original, plain


def _key_equal(a: Any, b: Any) -> bool:
    return bool(_hashable(a) == _hashable(b))


def _find_by_key(items: list[Any], merge_key: str, value: Any) -> int:
    for i, item in enumerate(items):
        if isinstance(item, dict) and merge_key in item and _key_equal(item[merge_key], value):
            return i
    return -1


def _index(order: list[Any], item: Any, merge_key: str) -> int:
    """strategicpatch.index: position of ``item`` in ``order`` by merge key (or by value)."""
    wanted = _key_of(item, merge_key)
    for i, candidate in enumerate(order):
        if _key_of(candidate, merge_key) == wanted:
            return i
    return -1


def _partition(merged: list[Any], names: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    """partitionMapsByPresentInList / partitionPrimitivesByPresentInList."""
    present: list[Any] = []
    absent: list[Any] = []
    for item in merged:
        (present if _index(names, item, merge_key) >= 0 else absent).append(item)
    return present, absent


def _normalize_element_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
) -> list[Any]:
    """normalizeElementOrder: sort each part by its own order, then mergeSortedSlice."""
    patch_sorted = _stable_sort_by(patch_items, patch_order, merge_key)
    server_sorted = _stable_sort_by(server_only, server_order, merge_key)
    return _merge_sorted(server_sorted, patch_sorted, server_order, merge_key)


def _stable_sort_by(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    position: Callable[[Any], int] = lambda item: _index(order, item, merge_key)  # noqa: E731
    return sorted(items, key=position)


def _merge_sorted(
    left: list[Any], right: list[Any], server_order: list[Any], merge_key: str
) -> list[Any]:
    """mergeSortedSlice: a left (server-only) item goes first only if both are live and it is
    earlier in the live list; otherwise the right (patch) item goes first."""
    out: list[Any] = []
    i = j = 0
    while i < len(left) or j < len(right):
        if i >= len(left):
            out.append(right[j])
            j += 1
        elif j >= len(right):
            out.append(left[i])
            i += 1
        else:
            li = _index(server_order, left[i], merge_key)
            ri = _index(server_order, right[j], merge_key)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
    return out
