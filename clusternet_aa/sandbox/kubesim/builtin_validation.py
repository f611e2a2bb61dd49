"""A subset of kube's per-kind validation of built-in objects (``pkg/apis/*/validation``).

kube-apiserver refuses a Pod without containers, a Deployment whose selector does not select its
own template, or a ConfigMap over 1 MiB with 422 Invalid. kubesim does not port kube's
validation code; it checks what a client most easily gets wrong and what the schemas state:

* every field the built-in schema lists as ``required`` is present (a missing value, ``""`` or an
  empty list is ``<path>: Required value``), everywhere outside ``status``;
* the selector of a Deployment, StatefulSet or DaemonSet is set, not empty, and selects the
  template's labels;
* ConfigMap and Secret keys are valid config keys, and their data is at most 1 MiB.

Writes to subresources (``/status``) are not checked: kube validates only the status there.
Anything else kube validates (port ranges, DNS names inside specs, immutable fields...) is not
checked, and the messages follow kube's form without being copied from it for every case;
``docs/kubesim.md`` lists this as a known difference.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from clusternet_aa.sandbox.kubesim import fieldschema, naming
from clusternet_aa.sandbox.kubesim.selectors import label_selector_from_dict
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj, ResourceInfo

Cause = naming.Cause

#: kube's MaxSecretSize and ConfigMap's total size limit.
MAX_DATA_BYTES = 1024 * 1024
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
    "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)
_WORKLOADS = frozenset({("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets")})


def validate_builtin(obj: Obj, resource: ResourceInfo) -> None:
    """Raise 422 Invalid, with one cause per problem, if kube would refuse ``obj``."""
    if resource.schema is not None:
        return  # custom resources: validation.validate_schema checks them
    node = fieldschema.root(resource)
    if node is None:
        return
    causes: list[Cause] = []
    for key, value in obj.items():
        if key != "status":
            _required(value, fieldschema.child(node, key), key, causes)
    _required_here(obj, node, "", causes, skip=("status",))
    kind = (resource.group, resource.resource)
    if kind in _WORKLOADS:
        causes += _selector_matches_template(obj)
    if kind in (("", "configmaps"), ("", "secrets")):
        causes += _data_keys_and_size(obj, secret=kind == ("", "secrets"))
    if causes:
        name = str(obj.get("metadata", {}).get("name", ""))
        raise naming.invalid(resource, name, causes)


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == []


def _required_here(
    value: Mapping[str, Any],
    node: fieldschema.Node,
    path: str,
    causes: list[Cause],
    skip: tuple[str, ...] = (),
) -> None:
    for key in node.get("required") or ():
        if key not in skip and _missing(value.get(key)):
            causes.append((_join(path, key), "FieldValueRequired", "Required value"))


def _required(value: Any, node: fieldschema.Node | None, path: str, causes: list[Cause]) -> None:
    """Walk ``value`` alongside its schema, collecting required fields that are missing."""
    if node is None or fieldschema.is_free_form(node, crd=False):
        return
    if isinstance(value, Mapping):
        _required_here(value, node, path, causes)
        for key, child_value in value.items():
            _required(child_value, fieldschema.child(node, str(key)), _join(path, str(key)), causes)
    elif isinstance(value, list):
        item = fieldschema.items(node)
        for index, element in enumerate(value):
            _required(element, item, f"{path}[{index}]", causes)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _selector_matches_template(obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return []
    selector = spec.get("selector")
    if selector is None:
        return []  # reported as a missing required field
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        kind = str(obj.get("kind", "")).lower()
        message = f"Invalid value: {selector!r}: empty selector is invalid for {kind}"
        return [("spec.selector", "FieldValueInvalid", message)]
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    try:
        matches = label_selector_from_dict(selector).matches(labels)
    except KubesimError as e:
        return [("spec.selector", "FieldValueInvalid", f"Invalid value: {e.message}")]
    if matches:
        return []
    return [
        (
            "spec.template.metadata.labels",
            "FieldValueInvalid",
            f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
        )
    ]


def _data_keys_and_size(obj: Obj, *, secret: bool) -> list[Cause]:
    causes: list[Cause] = []
    total = 0
    for field in ("data",) if secret else ("data", "binaryData"):
        values = obj.get(field) or {}
        if not isinstance(values, Mapping):
            continue
        for key, value in values.items():
            if not _CONFIG_KEY.fullmatch(str(key)) or str(key) in (".", ".."):
                message = f'Invalid value: "{key}": {_CONFIG_KEY_MSG}'
                causes.append((f"{field}[{key}]", "FieldValueInvalid", message))
            total += _size(value, encoded=secret or field == "binaryData")
    if total > MAX_DATA_BYTES:
        where = "data" if secret else "[]"
        message = f"Too long: must have at most {MAX_DATA_BYTES} bytes"
        causes.append((where, "FieldValueTooLong", message))
    return causes


def _size(value: Any, *, encoded: bool) -> int:
    text = str(value)
    if not encoded:
        return len(text.encode())
    try:
        return len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return len(text)


def _go_map(labels: Mapping[str, Any]) -> str:
    """Go's ``%#v`` of a ``map[string]string``."""
    items = ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
    return "map[string]string{" + items + "}"
