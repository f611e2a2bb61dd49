"""The model machinery: typed, frozen dataclasses that round-trip Kubernetes JSON.

Every API type is a frozen, keyword-only dataclass deriving from :class:`Model`. Each field
names its JSON key with :func:`field`, and the field's Python type says how the value is
coded: ``bytes`` is base64 (Go's ``[]byte``), ``datetime`` is RFC 3339 (``metav1.Time``),
``Any`` is raw JSON kept as is (``runtime.RawExtension``, embedded objects), a nested
:class:`Model` is an object, ``list[...]`` and ``dict[str, ...]`` recurse.

Omission follows Go's ``encoding/json`` as Clusternet's types declare it:

* a field typed ``X | None`` is a Go pointer: omitted when None, written when set (even
  ``False`` or ``0``);
* any other field is ``omitempty``: omitted when zero (``""``, ``0``, ``False``, empty bytes,
  list or dict) unless declared ``always=True`` (a Go field without ``omitempty``);
* a nested :class:`Model` is a Go struct value and is always written, as Go does.

Keys a model does not know land in its ``extra`` dict and are written back unchanged, so a
read-modify-write through these models never loses fields a newer Clusternet added.

Change a frozen model with :func:`dataclasses.replace`.
"""

# `meta.field` is this package's dataclass field specifier (it wraps dataclasses.field).
# ruff: noqa: RUF009

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime as dt
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Self

__all__ = [
    "Condition",
    "KubeObject",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Model",
    "ModelError",
    "ObjectMeta",
    "OwnerReference",
    "Quantity",
    "Taint",
    "Toleration",
    "decode_bytes",
    "encode_bytes",
    "field",
    "find_condition",
    "format_time",
    "parse_time",
    "set_condition",
]

_MISSING: Any = dataclasses.MISSING

_QUANTITY_MARK = "quantity"

#: A ``resource.Quantity``: a string (``"15800m"``, ``"64Gi"``); a bare JSON number is accepted
#: on input and kept as its string form, as kube does.
Quantity = Annotated[str, _QUANTITY_MARK]


class ModelError(ValueError):
    """A JSON document does not fit a model (wrong type, bad base64, bad time)."""


def field(
    json_name: str,
    default: Any = _MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    always: bool = False,
    secret: bool = False,
) -> Any:
    """A model field stored under JSON key ``json_name``.

    ``always`` marks a Go field without ``omitempty``: written even when zero. ``secret``
    keeps the value out of ``repr`` (tokens must not end up in logs).
    """
    metadata = {"json": json_name, "always": always}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata, repr=not secret)


# --- scalar codecs ----------------------------------------------------------------------------


def encode_bytes(data: bytes) -> str:
    """Go's encoding of ``[]byte``: standard base64 with padding."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """Go's decoding of ``[]byte``: standard base64; CR and LF are ignored."""
    cleaned = text.replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ModelError(f"illegal base64 data: {text[:40]!r}") from e


def format_time(value: dt.datetime) -> str:
    """``metav1.Time`` form: RFC 3339 in UTC, whole seconds (``2026-05-01T10:00:00Z``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time as an aware datetime."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ModelError(f"invalid RFC 3339 time {text!r}") from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


# --- generic codec ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Slot:
    name: str
    key: str
    hint: Any
    optional: bool
    always: bool


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
        raise TypeError(f"unsupported union {hint!r}")
    return hint, False


_SLOTS: dict[type[Any], tuple[_Slot, ...]] = {}


def _slots(cls: type[Model]) -> tuple[_Slot, ...]:
    """The coded fields of ``cls`` (computed once per class)."""
    cached = _SLOTS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        if "json" not in f.metadata:
            continue
        hint, optional = _unwrap_optional(hints[f.name])
        out.append(_Slot(f.name, f.metadata["json"], hint, optional, f.metadata["always"]))
    _SLOTS[cls] = result = tuple(out)
    return result


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(
        type(value), type(value).__name__
    )


def _decode(hint: Any, value: Any, path: str) -> Any:
    hint, _ = _unwrap_optional(hint)
    if typing.get_origin(hint) is Annotated:
        base, *marks = typing.get_args(hint)
        quantity = _QUANTITY_MARK in marks
        if quantity and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return _decode(base, value, path)
    if hint is Any:
        return copy.deepcopy(value)
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ModelError(f"{path}: expected an array, got {_type_name(value)}")
        (item,) = typing.get_args(hint)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ModelError(f"{path}: expected an object, got {_type_name(value)}")
        _, item = typing.get_args(hint)
        return {str(k): _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Model):
        if not isinstance(value, Mapping):
            raise ModelError(f"{path}: expected an object, got {_type_name(value)}")
        return hint._decode(value, path)
    if hint is bytes:
        if not isinstance(value, str):
            raise ModelError(f"{path}: expected a base64 string, got {_type_name(value)}")
        try:
            return decode_bytes(value)
        except ModelError as e:
            raise ModelError(f"{path}: {e}") from None
    if hint is dt.datetime:
        if not isinstance(value, str):
            raise ModelError(f"{path}: expected a time string, got {_type_name(value)}")
        try:
            return parse_time(value)
        except ModelError as e:
            raise ModelError(f"{path}: {e}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ModelError(f"{path}: expected a boolean, got {_type_name(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelError(f"{path}: expected an integer, got {_type_name(value)}")
        if isinstance(value, float) and not value.is_integer():
            raise ModelError(f"{path}: expected an integer, got {value}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelError(f"{path}: expected a number, got {_type_name(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ModelError(f"{path}: expected a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported field type {hint!r}")


def _encode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    hint, _ = _unwrap_optional(hint)
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if hint is Any:
        return copy.deepcopy(value)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return [_encode(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        return {k: _encode(item, v) for k, v in value.items()}
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, bytes):
        return encode_bytes(value)
    if isinstance(value, dt.datetime):
        return format_time(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Go writes float32(50) as 50
    return value


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, Model):
        return False  # Go never omits a struct value
    if isinstance(value, (str, bytes, list, dict)):
        return len(value) == 0
    if isinstance(value, (bool, int, float)):
        return not value
    return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
    """Base of every API type: ``from_dict`` / ``to_dict`` with unknown keys kept in ``extra``."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Self:
        """The model of a decoded JSON object (raises :class:`ModelError` on bad input)."""
        return cls._decode(obj, "")

    @classmethod
    def _decode(cls, obj: Mapping[str, Any], path: str) -> Self:
        values: dict[str, Any] = {}
        known = set()
        for slot in _slots(cls):
            known.add(slot.key)
            if slot.key not in obj or obj[slot.key] is None:
                continue
            sub = f"{path}.{slot.key}" if path else slot.key
            values[slot.name] = _decode(slot.hint, obj[slot.key], sub)
        extra = {k: copy.deepcopy(v) for k, v in obj.items() if k not in known}
        return cls(extra=extra, **values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, with Go's omission rules (see the module docstring)."""
        out: dict[str, Any] = {}
        for slot in _slots(type(self)):
            value = getattr(self, slot.name)
            if slot.optional:
                if value is None and not slot.always:
                    continue
            elif not slot.always and _is_empty(value):
                continue
            out[slot.key] = _encode(slot.hint, value)
        for key, value in self.extra.items():
            out.setdefault(key, copy.deepcopy(value))
        return out


# --- metav1 and corev1 subsets ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class OwnerReference(Model):
    api_version: str = field("apiVersion", "", always=True)
    kind: str = field("kind", "", always=True)
    name: str = field("name", "", always=True)
    uid: str = field("uid", "", always=True)
    controller: bool | None = field("controller", None)
    block_owner_deletion: bool | None = field("blockOwnerDeletion", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectMeta(Model):
    """The parts of ``metav1.ObjectMeta`` controllers use; the rest stays in ``extra``."""

    name: str = field("name", "")
    generate_name: str = field("generateName", "")
    namespace: str = field("namespace", "")
    uid: str = field("uid", "")
    resource_version: str = field("resourceVersion", "")
    generation: int = field("generation", 0)
    creation_timestamp: dt.datetime | None = field("creationTimestamp", None)
    deletion_timestamp: dt.datetime | None = field("deletionTimestamp", None)
    deletion_grace_period_seconds: int | None = field("deletionGracePeriodSeconds", None)
    labels: dict[str, str] = field("labels", factory=dict)
    annotations: dict[str, str] = field("annotations", factory=dict)
    owner_references: list[OwnerReference] = field("ownerReferences", factory=list)
    finalizers: list[str] = field("finalizers", factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Condition(Model):
    """``metav1.Condition``."""

    type: str = field("type", "", always=True)
    status: str = field("status", "", always=True)
    observed_generation: int = field("observedGeneration", 0)
    last_transition_time: dt.datetime | None = field("lastTransitionTime", None)
    reason: str = field("reason", "", always=True)
    message: str = field("message", "", always=True)


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if any."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition], new: Condition, *, now: dt.datetime | None = None
) -> list[Condition]:
    """``meta.SetStatusCondition``: add or update by type.

    The transition time changes only when the status changes (or when ``new`` carries one);
    reason, message and observedGeneration are always taken from ``new``.
    """
    stamp = now or dt.datetime.now(dt.UTC).replace(microsecond=0)
    out: list[Condition] = []
    found = False
    for existing in conditions:
        if existing.type != new.type:
            out.append(existing)
            continue
        found = True
        if existing.status != new.status:
            when = new.last_transition_time or stamp
        else:
            when = existing.last_transition_time or new.last_transition_time or stamp
        out.append(dataclasses.replace(new, last_transition_time=when))
    if not found:
        out.append(dataclasses.replace(new, last_transition_time=new.last_transition_time or stamp))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSelectorRequirement(Model):
    key: str = field("key", "", always=True)
    operator: str = field("operator", "", always=True)
    values: list[str] = field("values", factory=list)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSelector(Model):
    """``metav1.LabelSelector``; an empty selector matches everything."""

    match_labels: dict[str, str] = field("matchLabels", factory=dict)
    match_expressions: list[LabelSelectorRequirement] = field("matchExpressions", factory=list)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy every term (ANDed), as ``LabelSelectorAsSelector``."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In":
                ok = present and labels[req.key] in req.values
            elif req.operator == "NotIn":
                ok = not present or labels[req.key] not in req.values
            elif req.operator == "Exists":
                ok = present
            elif req.operator == "DoesNotExist":
                ok = not present
            else:
                raise ModelError(f"{req.operator!r} is not a valid label selector operator")
            if not ok:
                return False
        return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Taint(Model):
    """``corev1.Taint``."""

    key: str = field("key", "", always=True)
    value: str = field("value", "")
    effect: str = field("effect", "", always=True)
    time_added: dt.datetime | None = field("timeAdded", None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Toleration(Model):
    """``corev1.Toleration``."""

    key: str = field("key", "")
    operator: str = field("operator", "")
    value: str = field("value", "")
    effect: str = field("effect", "")
    toleration_seconds: int | None = field("tolerationSeconds", None)

    def tolerates(self, taint: Taint) -> bool:
        """``Toleration.ToleratesTaint`` (Equal and Exists operators)."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        if self.operator in ("", "Equal"):
            return self.value == taint.value
        return False


# --- top-level objects ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class KubeObject(Model):
    """An object with ``apiVersion``, ``kind`` and ``metadata``; subclasses name their kind."""

    API_VERSION: ClassVar[str] = ""
    KIND: ClassVar[str] = ""

    metadata: ObjectMeta = field("metadata", factory=ObjectMeta, always=True)

    @classmethod
    def _decode(cls, obj: Mapping[str, Any], path: str) -> Self:
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if kind not in (None, "", cls.KIND) or api_version not in (None, "", cls.API_VERSION):
            raise ModelError(
                f"{path or 'object'}: expected {cls.API_VERSION} {cls.KIND}, "
                f"got {api_version} {kind}"
            )
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        return super()._decode(body, path)

    def to_dict(self) -> dict[str, Any]:
        return {"apiVersion": self.API_VERSION, "kind": self.KIND, **super().to_dict()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @classmethod
    def list_from_dict(cls, obj: Mapping[str, Any]) -> list[Self]:
        """The items of a ``<Kind>List`` (items lack apiVersion and kind from some servers)."""
        items = obj.get("items") or []
        if not isinstance(items, list):
            raise ModelError("items: expected an array")
        return [cls._decode(item, f"items[{i}]") for i, item in enumerate(items)]
