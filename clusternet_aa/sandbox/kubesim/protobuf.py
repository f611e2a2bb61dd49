"""Decoding of ``application/vnd.kubernetes.protobuf`` request bodies into JSON objects.

kubectl's generator commands (``create namespace|configmap|secret|...``, ``create token``) and
``auth can-i`` send protobuf and do not fall back to JSON on a 415, so kubesim must read them.
The body is the Kubernetes envelope: the magic ``k8s\\x00`` followed by a ``runtime.Unknown``
message (1 typeMeta, 2 raw, 3 contentEncoding, 4 contentType) whose ``raw`` is the kind's own
message. We decode the wire format by hand against the field tables in
:mod:`protobuf_fields`, producing the dict kube-apiserver's JSON encoder would print for the
object. A field the tables do not know is refused with a 415 naming it: an object silently
missing a field would hide exactly the bugs kubesim exists to catch.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

from clusternet_aa.sandbox.kubesim.protobuf_fields import KINDS, MESSAGES, Field
from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

#: The prefix of every Kubernetes protobuf-encoded object.
MAGIC = b"k8s\x00"
#: The media type kubectl sends protobuf bodies with.
PROTOBUF_CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
#: What a wire value is after the first pass: an integer or the bytes of a length field.
_Raw = int | bytes


def decode_protobuf(body: bytes) -> Obj:
    """The JSON object of a protobuf request body, with ``apiVersion`` and ``kind``.

    Raises :class:`KubesimError`: 400 for bytes that are not a well-formed envelope or message,
    415 for an encoding, kind or field this decoder does not support.
    """
    if not body.startswith(MAGIC):
        raise _bad_request(
            f"provided data does not appear to be a protobuf message, expected prefix {MAGIC!r}"
        )
    envelope = _group(_fields(body[len(MAGIC) :], "runtime.Unknown"), "runtime.Unknown")
    for number in envelope:
        if number not in (1, 2, 3, 4):
            raise _unsupported("runtime.Unknown", number)
    type_meta = _decode_message(_payload(envelope, 1, "runtime.Unknown"), "runtime.TypeMeta")
    encoding = _string(_payload(envelope, 3, "runtime.Unknown"), "runtime.Unknown.contentEncoding")
    if encoding:
        raise KubesimError(
            415, "UnsupportedMediaType", f"unsupported protobuf content encoding {encoding!r}"
        )
    api_version = str(type_meta.get("apiVersion", ""))
    kind = str(type_meta.get("kind", ""))
    if not kind or not api_version:
        raise _bad_request("the protobuf envelope has no apiVersion or kind")
    message = KINDS.get((api_version, kind))
    if message is None:
        raise KubesimError(
            415,
            "UnsupportedMediaType",
            f"kubesim cannot decode protobuf bodies of {kind} ({api_version}); send JSON",
        )
    obj: Obj = {"kind": kind, "apiVersion": api_version}
    obj.update(_decode_message(_payload(envelope, 2, "runtime.Unknown"), message))
    return obj


def _decode_message(data: bytes, message: str) -> Obj:
    table = MESSAGES[message]
    grouped = _group(_fields(data, message), message)
    for number in grouped:
        if number not in table:
            raise _unsupported(message, number)
    out: Obj = {}
    for number, field in table.items():
        where = f"{message}.{field.json}"
        values = grouped.get(number)
        if field.repeated or field.kind == "map":
            if values:
                out[field.json] = _collection(values, field, where)
            elif not field.omitempty:
                out[field.json] = None
            continue
        if values is None and field.pointer:
            continue
        value = _single(values or [], field, where)
        if field.kind == "time" and value is None and field.omitempty:
            continue  # metav1.Time is ``omitzero`` since Kubernetes 1.33
        printed = field.pointer or not field.omitempty or field.kind in _ALWAYS_PRINTED
        if printed or value not in ("", 0, False):
            out[field.json] = value
    return out


#: Go structs (and metav1.Time, IntOrString, Quantity) are printed even with ``omitempty``.
_ALWAYS_PRINTED = frozenset({"message", "time", "intstr", "quantity"})


def _single(values: list[_Raw], field: Field, where: str) -> Any:
    """A non-repeated field: the last scalar wins, embedded messages merge (proto semantics)."""
    if field.kind in ("message", "time", "intstr", "quantity", "bytes", "string"):
        chunks = [_as_bytes(value, where) for value in values]
        data = b"".join(chunks) if field.kind == "message" else (chunks[-1] if chunks else b"")
        return _value(data, field, where)
    if not values:
        return False if field.kind == "bool" else 0
    return _value(values[-1], field, where)


def _collection(values: list[_Raw], field: Field, where: str) -> Any:
    if field.kind == "map":
        result: dict[str, Any] = {}
        for entry in values:
            pair = _group(_fields(_as_bytes(entry, where), where), where)
            key = _string(_payload(pair, 1, where), where)
            raw = _payload(pair, 2, where)
            if field.map_value == "bytes":
                result[key] = base64.b64encode(raw).decode("ascii")
            elif field.map_value == "quantity":
                result[key] = _quantity(raw, where)
            else:
                result[key] = _string(raw, where)
        return result
    items: list[Any] = []
    for value in values:
        if field.kind == "int" and isinstance(value, bytes):
            items.extend(_signed(number) for number in _packed_varints(value, where))
        else:
            items.append(_value(value, field, where))
    return items


def _value(raw: _Raw, field: Field, where: str) -> Any:
    kind = field.kind
    if kind == "int":
        return _signed(_as_int(raw, where))
    if kind == "bool":
        return _as_int(raw, where) != 0
    data = _as_bytes(raw, where)
    if kind == "string":
        return _string(data, where)
    if kind == "bytes":
        return base64.b64encode(data).decode("ascii")
    if kind == "message":
        return _decode_message(data, field.message)
    if kind == "time":
        return _time(data, where)
    if kind == "intstr":
        return _int_or_string(data, where)
    if kind == "quantity":
        return _quantity(data, where)
    raise AssertionError(f"unhandled field kind {kind}")  # pragma: no cover


def _time(data: bytes, where: str) -> str | None:
    """``metav1.Time``: empty bytes are the zero time (JSON null); else whole seconds, UTC."""
    if not data:
        return None
    fields = _group(_fields(data, where), where)
    seconds = _signed(_last_int(fields, 1, where))
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_or_string(data: bytes, where: str) -> int | str:
    """``intstr.IntOrString``: 1 type (0 int, 1 string), 2 intVal, 3 strVal."""
    fields = _group(_fields(data, where), where)
    if _last_int(fields, 1, where) == 1:
        return _string(_payload(fields, 3, where), where)
    return _signed(_last_int(fields, 2, where))


def _quantity(data: bytes, where: str) -> str:
    """``resource.Quantity`` travels as its canonical string (field 1); zero prints as "0"."""
    fields = _group(_fields(data, where), where)
    return _string(_payload(fields, 1, where), where) or "0"


def _fields(data: bytes, where: str) -> Iterator[tuple[int, _Raw]]:
    """The (field number, value) pairs of one message, in wire order."""
    position = 0
    size = len(data)
    while position < size:
        key, position = _varint(data, position, where)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _bad_request(f"invalid protobuf field number 0 in {where}")
        if wire_type == _VARINT:
            value, position = _varint(data, position, where)
            yield number, value
        elif wire_type == _LEN:
            length, position = _varint(data, position, where)
            if position + length > size:
                raise _bad_request(f"truncated protobuf field {where}.{number}")
            yield number, data[position : position + length]
            position += length
        elif wire_type in (_FIXED32, _FIXED64):
            width = 4 if wire_type == _FIXED32 else 8
            if position + width > size:
                raise _bad_request(f"truncated protobuf field {where}.{number}")
            yield number, int.from_bytes(data[position : position + width], "little")
            position += width
        else:
            raise _bad_request(f"unsupported protobuf wire type {wire_type} in {where}.{number}")


def _group(fields: Iterator[tuple[int, _Raw]], where: str) -> dict[int, list[_Raw]]:
    grouped: dict[int, list[_Raw]] = {}
    for number, value in fields:
        grouped.setdefault(number, []).append(value)
    return grouped


def _varint(data: bytes, position: int, where: str) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise _bad_request(f"truncated protobuf varint in {where}")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, position
    raise _bad_request(f"protobuf varint too long in {where}")


def _packed_varints(data: bytes, where: str) -> Iterator[int]:
    position = 0
    while position < len(data):
        value, position = _varint(data, position, where)
        yield value


def _signed(value: int) -> int:
    """Go's int32/int64 travel as two's-complement 64-bit varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _as_int(raw: _Raw, where: str) -> int:
    if isinstance(raw, bytes):
        raise _bad_request(f"protobuf field {where} should be a number")
    return raw


def _as_bytes(raw: _Raw, where: str) -> bytes:
    if not isinstance(raw, bytes):
        raise _bad_request(f"protobuf field {where} should be length-delimited")
    return raw


def _payload(fields: dict[int, list[_Raw]], number: int, where: str) -> bytes:
    values = fields.get(number)
    return _as_bytes(values[-1], f"{where}.{number}") if values else b""


def _last_int(fields: dict[int, list[_Raw]], number: int, where: str) -> int:
    values = fields.get(number)
    return _as_int(values[-1], f"{where}.{number}") if values else 0


def _string(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_request(f"protobuf field {where} is not valid UTF-8") from None


def _bad_request(message: str) -> KubesimError:
    return KubesimError(400, "BadRequest", message)


def _unsupported(message: str, number: int) -> KubesimError:
    return KubesimError(
        415,
        "UnsupportedMediaType",
        f"kubesim cannot decode field {message}.{number} of this protobuf body; send JSON",
    )
