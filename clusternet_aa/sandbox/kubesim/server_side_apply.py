"""Server-side apply and ``metadata.managedFields``, after sigs.k8s.io/structured-merge-diff.

An apply (``application/apply-patch+yaml``) merges the applied configuration into the live
object field by field: granular maps merge, associative lists (``x-kubernetes-list-type: map``
or a patch merge key) merge element by element on their keys, sets merge by value, atomic
lists and maps are replaced. Each manager's fields are recorded in ``metadata.managedFields``
in kube's FieldsV1 notation (``f:<field>``, ``k:{"name":"c"}``, ``v:"value"``, ``.`` for a
member that also has children).

Like kube-apiserver:

* a field the same manager applied before and no longer applies is removed, unless another
  manager also owns it;
* a field another manager owns whose value the apply changes is a 409 Conflict
  (``Apply failed with 1 conflict: conflict with "mgr" using v1: .spec.replicas``) unless
  ``force`` is set, which moves ownership to the applier;
* an object that has no ``managedFields`` yet is first credited, as a whole, to the
  ``before-first-apply`` manager (kube's skipNonAppliedManager), so applying over fields
  written without field tracking conflicts just as it would against kube's ``kubectl-create``;
* ``apiVersion``, ``kind`` and the server-owned metadata (``name``, ``uid``...) are never owned
  (stripMetaManager), and ``status`` is not owned by writes to the main resource.

:func:`record_update` gives non-apply writes (create, update, patch) their ``Update`` entries,
so later applies see them as owners, as in kube.

Not modelled: the client-side-apply to server-side-apply upgrade path (lastAppliedManager's
conflict allowance for the ``kubectl`` manager), the cap of 10 ``Update`` managers, version
conversion of field sets, and schema defaults other than ``protocol: TCP`` in list keys.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from clusternet_aa.sandbox.kubesim import fieldschema
from clusternet_aa.sandbox.kubesim.fieldschema import Node
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

__all__ = ["BEFORE_FIRST_APPLY", "apply_server_side", "fields_v1", "record_update"]

BEFORE_FIRST_APPLY = "before-first-apply"

#: A field path in FieldsV1 element notation, e.g. ("f:spec", 'k:{"name":"c"}', "f:image").
Path = tuple[str, ...]

_STRIPPED: frozenset[Path] = frozenset(
    {
        ("f:apiVersion",),
        ("f:kind",),
        ("f:metadata", "f:name"),
        ("f:metadata", "f:namespace"),
        ("f:metadata", "f:creationTimestamp"),
        ("f:metadata", "f:selfLink"),
        ("f:metadata", "f:uid"),
        ("f:metadata", "f:clusterName"),
        ("f:metadata", "f:generation"),
        ("f:metadata", "f:managedFields"),
        ("f:metadata", "f:resourceVersion"),
        ("f:metadata",),
    }
)
#: Defaults of list-map key fields, which kube's OpenAPI declares and kubernetes-validate lacks.
_KEY_DEFAULTS = {"protocol": "TCP"}


class _ElementError(Exception):
    """The applied object does not fit its schema (a key missing, duplicate elements)."""


# --- field sets ------------------------------------------------------------------------------


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _element(item: Any, node: Node | None) -> str:
    """The path element of a list item: ``k:{...}`` for associative lists, ``v:`` for sets."""
    if fieldschema.list_type(node) == "map":
        keys = fieldschema.list_map_keys(node)
        if not isinstance(item, Mapping):
            raise _ElementError("associative list with keys has an element that is not a map")
        key: dict[str, Any] = {}
        for k in keys:
            if k in item and item[k] is not None:
                key[k] = item[k]
            elif k in _KEY_DEFAULTS:
                key[k] = _KEY_DEFAULTS[k]
            elif len(keys) == 1:
                raise _ElementError(
                    f'associative list with keys has an element that omits key field "{k}" '
                    "(and doesn't have default value)"
                )
        return "k:" + _json_key(key)
    return "v:" + _json_key(item)


def _is_associative(node: Node | None) -> bool:
    return fieldschema.list_type(node) in ("map", "set")


def _walk(value: Any, node: Node | None, path: Path) -> Iterator[tuple[Path, Any, bool]]:
    """Every owned path of ``value``: (path, value, is_leaf). Non-leaves are list elements."""
    if isinstance(value, Mapping) and not fieldschema.is_atomic_map(node) and value:
        for key, child in value.items():
            yield from _walk(child, fieldschema.child(node, key), (*path, f"f:{key}"))
    elif isinstance(value, list) and value and _is_associative(node):
        item_node = fieldschema.items(node)
        for item in value:
            element_path = (*path, _element(item, node))
            if isinstance(item, Mapping) and fieldschema.list_type(node) == "map":
                yield element_path, None, False
                yield from _walk(item, item_node, element_path)
            else:
                yield element_path, item, True
    elif path:
        yield path, value, True


def _owned(obj: Obj, schema: Node | None, *, main_resource: bool) -> dict[Path, tuple[Any, bool]]:
    out: dict[Path, tuple[Any, bool]] = {}
    for path, value, leaf in _walk(obj, schema, ()):
        if path in _STRIPPED or (main_resource and path[:1] == ("f:status",)):
            continue
        out[path] = (value, leaf)
    return out


def fields_v1(paths: Iterable[Path]) -> Obj:
    """Encode a set of paths as a FieldsV1 object."""
    members = set(paths)
    tree: dict[str, Any] = {}
    for path in sorted(members):
        node = tree
        for i, element in enumerate(path):
            node = node.setdefault(element, {})
            if i < len(path) - 1 and path[: i + 1] in members:
                node["."] = {}
    return tree


def parse_fields_v1(tree: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """Decode a FieldsV1 object into its set of paths."""
    paths: set[Path] = set()
    for element, children in tree.items():
        if element == ".":
            continue
        path = (*prefix, element)
        if not isinstance(children, Mapping) or not children or "." in children:
            paths.add(path)
        if isinstance(children, Mapping):
            paths |= parse_fields_v1(children, path)
    return paths


def _path_string(path: Path) -> str:
    """fieldpath.Path.String: ``.spec.containers[name="c"].image``."""
    out = []
    for element in path:
        kind, _, text = element.partition(":")
        if kind == "f":
            out.append("." + text)
        elif kind == "k":
            key = json.loads(text)
            out.append("[" + ",".join(f"{k}={_json_key(v)}" for k, v in key.items()) + "]")
        elif kind == "v":
            out.append(f"[={text}]")
        else:
            out.append(f"[{text}]")
    return "".join(out)


# --- merging ---------------------------------------------------------------------------------


def _merge(lhs: Any, rhs: Any, node: Node | None) -> Any:
    """The applied value ``rhs`` merged over the live value ``lhs`` (structured-merge-diff)."""
    if isinstance(lhs, Mapping) and isinstance(rhs, Mapping):
        if fieldschema.is_atomic_map(node):
            return copy.deepcopy(rhs)
        out = dict(lhs)
        for key, value in rhs.items():
            out[key] = _merge(lhs.get(key), value, fieldschema.child(node, key))
        return out
    if isinstance(lhs, list) and isinstance(rhs, list) and _is_associative(node):
        return _merge_list(lhs, rhs, node)
    return copy.deepcopy(rhs)


def _merge_list(lhs: list[Any], rhs: list[Any], node: Node | None) -> list[Any]:
    """mergingWalker.doList: rhs order wins for shared items, lhs-only items keep their place."""
    item_node = fieldschema.items(node)
    lhs_pes = [_element(i, node) for i in lhs]
    rhs_pes = [_element(i, node) for i in rhs]
    if len(set(rhs_pes)) != len(rhs_pes):
        dup = next(pe for pe in rhs_pes if rhs_pes.count(pe) > 1)
        raise _ElementError(f"duplicate entries for key {_path_string((dup,))}")
    observed_lhs = dict(zip(lhs_pes, lhs, strict=True))
    observed_rhs = dict(zip(rhs_pes, rhs, strict=True))
    shared = [pe for pe in rhs_pes if pe in observed_lhs]
    next_shared = shared.pop(0) if shared else None
    merged_rhs: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lhs_pes) or ri < len(rhs_pes):
        if li < len(lhs_pes) and ri < len(rhs_pes):
            pe = lhs_pes[li]
            if pe == rhs_pes[ri]:
                merged_rhs.add(pe)
                out.append(_merge(observed_lhs[pe], observed_rhs[pe], item_node))
                li += 1
                ri += 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in observed_rhs and next_shared is not None and next_shared != pe:
                li += 1
                continue
        if li < len(lhs_pes):
            pe = lhs_pes[li]
            if pe not in observed_rhs:
                out.append(copy.deepcopy(lhs[li]))
                li += 1
                continue
            if pe in merged_rhs:
                li += 1
                continue
        if ri < len(rhs_pes):
            pe = rhs_pes[ri]
            merged_rhs.add(pe)
            out.append(_merge(observed_lhs.get(pe), observed_rhs[pe], item_node))
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


def _remove_path(obj: Any, path: Path, node: Node | None) -> None:
    """Remove the field or list element at ``path`` (a no-op when it is already gone)."""
    parent: Any = obj
    parent_node = node
    for element in path[:-1]:
        parent, parent_node = _step(parent, element, parent_node)
        if parent is None:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        parent[:] = [i for i in parent if _safe_element(i, parent_node) != last]


def _safe_element(item: Any, node: Node | None) -> str | None:
    try:
        return _element(item, node)
    except _ElementError:
        return None


def _step(value: Any, element: str, node: Node | None) -> tuple[Any, Node | None]:
    if element.startswith("f:"):
        if isinstance(value, dict):
            return value.get(element[2:]), fieldschema.child(node, element[2:])
        return None, None
    if isinstance(value, list):
        for item in value:
            if _safe_element(item, node) == element:
                return item, fieldschema.items(node)
    return None, None


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# --- managedFields ---------------------------------------------------------------------------

_Identity = tuple[str, str, str, str]  # manager, operation, apiVersion (Update only), subresource


def _identity(entry: Mapping[str, Any]) -> _Identity:
    operation = str(entry.get("operation", ""))
    api_version = str(entry.get("apiVersion", "")) if operation == "Update" else ""
    return (
        str(entry.get("manager", "")),
        operation,
        api_version,
        str(entry.get("subresource", "")),
    )


def _entries(obj: Obj | None) -> list[Obj]:
    if obj is None:
        return []
    entries = (obj.get("metadata") or {}).get("managedFields") or []
    return [dict(e) for e in entries if isinstance(e, Mapping)]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(
    manager: str,
    operation: str,
    resource: ResourceInfo,
    paths: set[Path],
    time: str,
    subresource: str,
) -> Obj:
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": resource.group_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(paths),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _sorted_entries(entries: list[Obj]) -> list[Obj]:
    """kube's sortEncodedManagedFields: operation, time, manager, apiVersion, subresource."""
    return sorted(
        entries,
        key=lambda e: (
            e.get("operation", ""),
            e.get("time", ""),
            e.get("manager", ""),
            e.get("apiVersion", ""),
            e.get("subresource", ""),
        ),
    )


def _with_managed_fields(obj: Obj, entries: list[Obj]) -> Obj:
    metadata = dict(obj.get("metadata") or {})
    kept = [e for e in entries if e.get("fieldsV1")]
    if kept:
        metadata["managedFields"] = _sorted_entries(kept)
    else:
        metadata.pop("managedFields", None)
    return {**obj, "metadata": metadata}


def _owners(entries: list[Obj]) -> dict[_Identity, tuple[Obj, set[Path]]]:
    return {
        _identity(e): (e, parse_fields_v1(e.get("fieldsV1") or {}))
        for e in entries
        if isinstance(e.get("fieldsV1"), Mapping)
    }


def _typed_error(resource: ResourceInfo, error: _ElementError) -> KubesimError:
    gvk = f"{resource.group_version}, Kind={resource.kind}"
    return KubesimError(400, "BadRequest", f"failed to create typed patch object ({gvk}): {error}")


def record_update(
    existing: Obj | None,
    new: Obj,
    *,
    manager: str,
    resource: ResourceInfo,
    operation: str = "Update",
    subresource: str = "",
    now: str | None = None,
) -> Obj:
    """``new`` with ``managedFields`` updated for a non-apply write by ``manager``.

    As kube's fieldmanager Update: the manager gains the fields it added or changed, those
    fields leave every other manager, and fields that disappeared leave everyone. Call it for
    every create, update and non-apply patch so that later applies see these owners.
    """
    schema = fieldschema.root(resource)
    main = not subresource
    try:
        new_fields = _owned(_strip_managed(new), schema, main_resource=main)
        old_fields = (
            _owned(_strip_managed(existing), schema, main_resource=main) if existing else {}
        )
    except _ElementError as e:
        raise _typed_error(resource, e) from None
    sent = (new.get("metadata") or {}).get("managedFields")
    # Not sent (or null): keep the stored entries; sent: the client's entries are the baseline
    # (an explicit empty list resets them), as kube-apiserver treats a write.
    entries = _entries(existing) if sent is None else _entries(new)
    changed = {
        p
        for p, (value, leaf) in new_fields.items()
        if p not in old_fields or (leaf and not _same(old_fields[p][0], value))
    }
    owners = _owners(entries)
    me = (manager, operation, resource.group_version, subresource)
    result: list[Obj] = []
    mine: set[Path] = set()
    for identity, (entry, paths) in owners.items():
        kept = {p for p in paths if p in new_fields}
        if identity == me:
            mine = kept
            continue
        kept -= changed
        if kept:
            result.append({**entry, "fieldsV1": fields_v1(kept)})
    mine |= changed
    if mine:
        result.append(_entry(manager, operation, resource, mine, now or _now(), subresource))
    return _with_managed_fields(new, result)


def _strip_managed(obj: Obj) -> Obj:
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


def _same(a: Any, b: Any) -> bool:
    return _json_key(a) == _json_key(b)


def apply_server_side(
    existing: Obj | None,
    applied: Obj,
    *,
    manager: str,
    force: bool,
    resource: ResourceInfo,
    subresource: str = "",
    now: str | None = None,
) -> Obj:
    """The object after ``manager`` applies ``applied`` (create when ``existing`` is None).

    409 Conflict when the apply changes a field another manager owns and ``force`` is false;
    400 when ``applied`` sets ``metadata.managedFields`` or does not fit the schema.
    """
    if not manager:
        raise KubesimError(
            400, "BadRequest", "PATCH, application/apply-patch+yaml requires fieldManager"
        )
    if (applied.get("metadata") or {}).get("managedFields") is not None:
        raise KubesimError(400, "BadRequest", "metadata.managedFields must be nil")
    schema = fieldschema.root(resource)
    main = not subresource
    time = now or _now()
    me = (manager, "Apply", "", subresource)
    try:
        applied_fields = _owned(applied, schema, main_resource=main)
        if existing is None:
            created = _drop_nulls(copy.deepcopy(applied))
            entry = _entry(manager, "Apply", resource, set(applied_fields), time, subresource)
            return _with_managed_fields(created, [entry])
        live = _strip_managed(existing)
        entries = _entries(existing)
        if not entries:
            before = _owned(live, schema, main_resource=main)
            if before:
                entries = [_entry(BEFORE_FIRST_APPLY, "Update", resource, set(before), time, "")]
        owners = _owners(entries)
        merged = _merge(live, applied, schema)
        last = owners.get(me, ({}, set()))[1]
        others = {i: paths for i, (_, paths) in owners.items() if i != me}
        owned_by_others = set().union(*others.values()) if others else set()
        # Parents first: removing a list element takes its fields with it, and an element
        # whose fields another manager owns is kept while its own fields go.
        for path in sorted(last - set(applied_fields), key=len):
            if not any(p[: len(path)] == path for p in owned_by_others):
                _remove_path(merged, path, schema)
        merged = _drop_nulls(merged)
        live_fields = _owned(live, schema, main_resource=main)
        merged_fields = _owned(merged, schema, main_resource=main)
    except _ElementError as e:
        raise _typed_error(resource, e) from None

    changed = {
        p
        for p, (value, leaf) in merged_fields.items()
        if p not in live_fields or (leaf and not _same(live_fields[p][0], value))
    }
    conflicts: list[tuple[Obj, Path]] = []
    for identity, paths in others.items():
        entry = owners[identity][0]
        conflicts.extend((entry, p) for p in sorted(paths & changed & set(applied_fields)))
    if conflicts and not force:
        raise _conflict_error(conflicts)

    result: list[Obj] = []
    for identity, (entry, paths) in owners.items():
        if identity == me:
            continue
        kept = {p for p in paths if p in merged_fields}
        if force:
            kept -= changed & set(applied_fields)
        if kept:
            result.append({**entry, "fieldsV1": fields_v1(kept)})
    if applied_fields:
        result.append(_entry(manager, "Apply", resource, set(applied_fields), time, subresource))
    return _with_managed_fields(merged, result)


def _print_manager(entry: Mapping[str, Any]) -> str:
    """printManager: the manager, its subresource, and for updates the API version."""
    text = json.dumps(str(entry.get("manager", "")))
    if entry.get("subresource"):
        text += f" with subresource {json.dumps(str(entry['subresource']))}"
    if entry.get("operation") == "Update":
        # kube prints the manager identifier, which never holds the time.
        text += f" using {entry.get('apiVersion', '')}"
    return text


def _conflict_error(conflicts: list[tuple[Obj, Path]]) -> KubesimError:
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {_print_manager(entry)}",
            "field": _path_string(path),
        }
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {_print_manager(entry)}: "
            f"{_path_string(path)}"
        )
    else:
        by_manager: dict[str, list[str]] = {}
        for entry, path in conflicts:
            by_manager.setdefault(_print_manager(entry), []).append(_path_string(path))
        lines: list[str] = []
        for printed in sorted(by_manager):
            lines.append(f"conflicts with {printed}:")
            lines.extend(f"- {p}" for p in by_manager[printed])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return KubesimError(409, "Conflict", message, details={"causes": causes})
