"""Server-side printing: ``meta.k8s.io/v1`` Tables, as ``kubectl get`` asks for them.

kubectl prints whatever columns the server sends, so the columns here copy kube-apiserver's
printers for the built-ins (NAME/READY/STATUS/RESTARTS/AGE for pods and so on), CRDs' own
``additionalPrinterColumns``, and the default NAME/CREATED AT for everything else.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Sequence
from typing import Any

from clusternet_aa.sandbox.kubesim.registry import PrinterColumn
from clusternet_aa.sandbox.kubesim.types import Obj, ResourceInfo

Cell = Any
Column = tuple[str, str, str, int]  # name, type, format, priority
Printer = tuple[tuple[Column, ...], Callable[[Obj], list[Cell]]]


def human_duration(seconds: float) -> str:
    """kube's ``duration.HumanDuration``: the AGE column."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration((datetime.datetime.now(datetime.UTC) - then).total_seconds())


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name", ""))


def _age(obj: Obj) -> str:
    return age(_meta(obj).get("creationTimestamp"))


def _get(obj: Obj, *path: str) -> Any:
    current: Any = obj
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current


_NAME: Column = ("Name", "string", "name", 0)
_AGE: Column = ("Age", "string", "", 0)


def _pod_cells(obj: Obj) -> list[Cell]:
    containers = _get(obj, "spec", "containers") or []
    statuses = _get(obj, "status", "containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    status = _get(obj, "status", "reason") or _get(obj, "status", "phase") or "Pending"
    if _meta(obj).get("deletionTimestamp"):
        status = "Terminating"
    return [
        _name(obj),
        f"{ready}/{len(containers)}",
        status,
        restarts,
        _age(obj),
        _get(obj, "status", "podIP") or "<none>",
        _get(obj, "spec", "nodeName") or "<none>",
        _get(obj, "status", "nominatedNodeName") or "<none>",
        "<none>",
    ]


def _service_cells(obj: Obj) -> list[Cell]:
    ports = _get(obj, "spec", "ports") or []
    port_text = ",".join(
        f"{p.get('port')}/{p.get('protocol', 'TCP')}"
        if not p.get("nodePort")
        else f"{p.get('port')}:{p.get('nodePort')}/{p.get('protocol', 'TCP')}"
        for p in ports
    )
    external = _get(obj, "spec", "externalIPs") or []
    selector = _get(obj, "spec", "selector") or {}
    return [
        _name(obj),
        _get(obj, "spec", "type") or "ClusterIP",
        _get(obj, "spec", "clusterIP") or "<none>",
        ",".join(external) or "<none>",
        port_text or "<none>",
        _age(obj),
        ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",
    ]


def _node_cells(obj: Obj) -> list[Cell]:
    conditions = _get(obj, "status", "conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    status = "Ready" if ready and ready.get("status") == "True" else "NotReady"
    if _get(obj, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    labels = _meta(obj).get("labels") or {}
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in labels if k.startswith(prefix))
    return [
        _name(obj),
        status,
        ",".join(roles) or "<none>",
        _age(obj),
        _get(obj, "status", "nodeInfo", "kubeletVersion") or "",
    ]


def _deployment_cells(obj: Obj) -> list[Cell]:
    desired = _get(obj, "spec", "replicas")
    desired = 1 if desired is None else desired
    status = obj.get("status") or {}
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{desired}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
    ]


def _statefulset_cells(obj: Obj) -> list[Cell]:
    desired = _get(obj, "spec", "replicas")
    desired = 1 if desired is None else desired
    return [_name(obj), f"{_get(obj, 'status', 'readyReplicas') or 0}/{desired}", _age(obj)]


def _daemonset_cells(obj: Obj) -> list[Cell]:
    status = obj.get("status") or {}
    selector = _get(obj, "spec", "template", "spec", "nodeSelector") or {}
    return [
        _name(obj),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in selector.items()) or "<none>",
        _age(obj),
    ]


def _job_cells(obj: Obj) -> list[Cell]:
    conditions = _get(obj, "status", "conditions") or []
    status = "Running"
    for condition in conditions:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            status = str(condition["type"])
    completions = _get(obj, "spec", "completions")
    succeeded = _get(obj, "status", "succeeded") or 0
    return [
        _name(obj),
        status,
        f"{succeeded}/{completions if completions is not None else 1}",
        "",
        _age(obj),
    ]


def _binding_cells(obj: Obj) -> list[Cell]:
    ref = obj.get("roleRef") or {}
    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", _age(obj)]


def _event_cells(obj: Obj) -> list[Cell]:
    involved = obj.get("involvedObject") or obj.get("regarding") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or _meta(obj).get("creationTimestamp")
    return [
        age(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        obj.get("message") or obj.get("note") or "",
    ]


def _apiservice_cells(obj: Obj) -> list[Cell]:
    service = _get(obj, "spec", "service")
    conditions = _get(obj, "status", "conditions") or []
    available = next((c for c in conditions if c.get("type") == "Available"), None)
    shown = "Local"
    if service:
        shown = f"{service.get('namespace')}/{service.get('name')}"
    state = "True" if not service else "Unknown"
    if available:
        state = str(available.get("status"))
        if state != "True":
            state = f"{state} ({available.get('reason', '')})"
    return [_name(obj), shown, state, _age(obj)]


def _default_cells(obj: Obj) -> list[Cell]:
    return [_name(obj), _meta(obj).get("creationTimestamp")]


_CREATED_AT: tuple[Column, ...] = (_NAME, ("Created At", "date", "", 0))

_PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "pods"): (
        (
            _NAME,
            ("Ready", "string", "", 0),
            ("Status", "string", "", 0),
            ("Restarts", "string", "", 0),
            _AGE,
            ("IP", "string", "", 1),
            ("Node", "string", "", 1),
            ("Nominated Node", "string", "", 1),
            ("Readiness Gates", "string", "", 1),
        ),
        _pod_cells,
    ),
    ("", "namespaces"): (
        (_NAME, ("Status", "string", "", 0), _AGE),
        lambda o: [_name(o), _get(o, "status", "phase") or "Active", _age(o)],
    ),
    ("", "configmaps"): (
        (_NAME, ("Data", "integer", "", 0), _AGE),
        lambda o: [
            _name(o),
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _age(o),
        ],
    ),
    ("", "secrets"): (
        (_NAME, ("Type", "string", "", 0), ("Data", "string", "", 0), _AGE),
        lambda o: [_name(o), o.get("type", "Opaque"), len(o.get("data") or {}), _age(o)],
    ),
    ("", "serviceaccounts"): (
        (_NAME, ("Secrets", "string", "", 0), _AGE),
        lambda o: [_name(o), len(o.get("secrets") or []), _age(o)],
    ),
    ("", "services"): (
        (
            _NAME,
            ("Type", "string", "", 0),
            ("Cluster-IP", "string", "", 0),
            ("External-IP", "string", "", 0),
            ("Port(s)", "string", "", 0),
            _AGE,
            ("Selector", "string", "", 1),
        ),
        _service_cells,
    ),
    ("", "nodes"): (
        (
            _NAME,
            ("Status", "string", "", 0),
            ("Roles", "string", "", 0),
            _AGE,
            ("Version", "string", "", 0),
        ),
        _node_cells,
    ),
    ("", "endpoints"): (
        (_NAME, ("Endpoints", "string", "", 0), _AGE),
        lambda o: [
            _name(o),
            ",".join(
                f"{a.get('ip')}:{p.get('port')}"
                for s in o.get("subsets") or []
                for a in s.get("addresses") or []
                for p in s.get("ports") or []
            )
            or "<none>",
            _age(o),
        ],
    ),
    ("", "events"): (
        (
            ("Last Seen", "string", "", 0),
            ("Type", "string", "", 0),
            ("Reason", "string", "", 0),
            ("Object", "string", "", 0),
            ("Message", "string", "", 0),
        ),
        _event_cells,
    ),
    ("coordination.k8s.io", "leases"): (
        (_NAME, ("Holder", "string", "", 0), _AGE),
        lambda o: [_name(o), _get(o, "spec", "holderIdentity") or "", _age(o)],
    ),
    ("apps", "deployments"): (
        (
            _NAME,
            ("Ready", "string", "", 0),
            ("Up-to-date", "string", "", 0),
            ("Available", "string", "", 0),
            _AGE,
        ),
        _deployment_cells,
    ),
    ("apps", "statefulsets"): (
        (_NAME, ("Ready", "string", "", 0), _AGE),
        _statefulset_cells,
    ),
    ("apps", "daemonsets"): (
        (
            _NAME,
            ("Desired", "integer", "", 0),
            ("Current", "integer", "", 0),
            ("Ready", "integer", "", 0),
            ("Up-to-date", "integer", "", 0),
            ("Available", "integer", "", 0),
            ("Node Selector", "string", "", 0),
            _AGE,
        ),
        _daemonset_cells,
    ),
    ("batch", "jobs"): (
        (
            _NAME,
            ("Status", "string", "", 0),
            ("Completions", "string", "", 0),
            ("Duration", "string", "", 0),
            _AGE,
        ),
        _job_cells,
    ),
    ("rbac.authorization.k8s.io", "rolebindings"): (
        (_NAME, ("Role", "string", "", 0), _AGE),
        _binding_cells,
    ),
    ("rbac.authorization.k8s.io", "clusterrolebindings"): (
        (_NAME, ("Role", "string", "", 0), _AGE),
        _binding_cells,
    ),
    ("apiregistration.k8s.io", "apiservices"): (
        (_NAME, ("Service", "string", "", 0), ("Available", "string", "", 0), _AGE),
        _apiservice_cells,
    ),
}


# -- CRD printer columns ----------------------------------------------------------------

_SEGMENT = re.compile(
    r"\.([A-Za-z0-9_\-/]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*['\"]([^'\"]*)['\"]\)\]"
)


def json_path(obj: Obj, path: str) -> list[Any]:
    """The values of a simple JSONPath (``.a.b``, ``[0]``, ``[?(@.type=="Ready")]``, ``[*]``)."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    text = text.replace("[*]", "[?(@.__all__=='')]")
    current: list[Any] = [obj]
    position = 0
    while position < len(text):
        match = _SEGMENT.match(text, position)
        if match is None:
            return []
        position = match.end()
        field, index, filter_key, filter_value = match.groups()
        following: list[Any] = []
        for value in current:
            if field is not None and isinstance(value, dict) and field in value:
                following.append(value[field])
            elif index is not None and isinstance(value, list) and int(index) < len(value):
                following.append(value[int(index)])
            elif filter_key is not None and isinstance(value, list):
                for item in value:
                    if filter_key == "__all__":
                        following.append(item)
                    elif isinstance(item, dict):
                        found = json_path(item, "." + filter_key)
                        if found and str(found[0]) == filter_value:
                            following.append(item)
        current = following
    return current


def _custom_cell(obj: Obj, column: PrinterColumn) -> Cell:
    values = json_path(obj, column.json_path)
    if not values:
        return None
    if len(values) > 1:
        return ",".join(str(v) for v in values)
    value = values[0]
    if column.type == "date":
        return age(str(value))
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value


def _column_definition(column: Column) -> Obj:
    name, type_, format_, priority = column
    return {
        "name": name,
        "type": type_,
        "format": format_,
        "description": "",
        "priority": priority,
    }


def printer_for(
    info: ResourceInfo, custom_columns: Sequence[PrinterColumn] | None
) -> tuple[list[Obj], Callable[[Obj], list[Cell]]]:
    """The column definitions and cell function for one resource."""
    if custom_columns is not None:
        columns = list(custom_columns) or [
            PrinterColumn("Age", "date", ".metadata.creationTimestamp")
        ]
        definitions = [_column_definition(_NAME)] + [
            {
                "name": c.name,
                "type": c.type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            }
            for c in columns
        ]
        return definitions, lambda o: [_name(o)] + [_custom_cell(o, c) for c in columns]
    printer = _PRINTERS.get((info.group, info.resource))
    if printer is None:
        return [_column_definition(c) for c in _CREATED_AT], _default_cells
    return [_column_definition(c) for c in printer[0]], printer[1]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    info: ResourceInfo,
    custom_columns: Sequence[PrinterColumn] | None,
    objects: Sequence[Obj],
    *,
    include_object: str = "Metadata",
    list_meta: Obj | None = None,
    headers: bool = True,
) -> Obj:
    """A ``meta.k8s.io/v1`` Table of ``objects``."""
    definitions, cells = printer_for(info, custom_columns)
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(obj)}
        embedded = _row_object(obj, include_object)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": definitions if headers else [],
        "rows": rows,
    }
