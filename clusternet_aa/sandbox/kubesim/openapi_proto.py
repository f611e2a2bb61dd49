"""The OpenAPI v2 document in protobuf, as kube-apiserver serves it to kubectl.

client-go fetches ``/openapi/v2`` with ``Accept: application/com.github.proto-openapi.spec.v2@v1.0
+protobuf`` (or the ``.v1.0`` spelling) and parses the answer as gnostic's ``openapi.v2.Document``
without a JSON fallback; kubectl's client-side validation of a ``kind: List`` reads it. This
module encodes the JSON v2 document :mod:`openapi` builds into that message, field by field from
gnostic's public ``openapiv2/OpenAPIv2.proto``. Vendor extensions
(``x-kubernetes-group-version-kind``...) and defaults become ``Any`` values carrying YAML, which
is how gnostic and kube-openapi exchange them.

Keys the v2 ``Schema`` message has no field for (``$schema``, ``anyOf``...) are dropped, as
gnostic drops them when it compiles a JSON document.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import yaml

#: What kube-apiserver (kube-openapi's handler) answers with. client-go asks for the older
#: ``...spec.v2@v1.0+protobuf`` spelling, which is not a valid media type for Go's
#: ``mime.ParseMediaType``, so the answer must use this one.
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

_VARINT, _FIXED64, _LEN = 0, 1, 2
_OPERATIONS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def wants_protobuf(accept: str) -> bool:
    """Whether an ``Accept`` header asks for the protobuf document before JSON."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip()
        if media.startswith("application/com.github.proto-openapi.spec.v2"):
            return True
        if media in ("application/json", "*/*"):
            return False
    return False


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """``openapi.v2.Document`` for a JSON v2 document."""
    out = bytearray()
    _string(out, 1, doc.get("swagger"))
    info = doc.get("info")
    if isinstance(info, Mapping):
        body = bytearray()
        _string(body, 1, info.get("title"))
        _string(body, 2, info.get("version"))
        _string(body, 3, info.get("description"))
        _vendor(body, 7, info)
        _message(out, 2, body)
    for number, key in ((3, "host"), (4, "basePath")):
        _string(out, number, doc.get(key))
    for number, key in ((5, "schemes"), (6, "consumes"), (7, "produces")):
        _strings(out, number, doc.get(key))
    paths = doc.get("paths")
    if isinstance(paths, Mapping):
        body = bytearray()
        _vendor(body, 1, paths)
        for name, item in paths.items():
            if not str(name).startswith("x-") and isinstance(item, Mapping):
                _named(body, 2, str(name), _path_item(item))
        _message(out, 8, body)
    definitions = doc.get("definitions")
    if isinstance(definitions, Mapping):
        body = bytearray()
        for name, schema in definitions.items():
            _named(body, 1, str(name), _schema(schema))
        _message(out, 9, body)
    for requirement in doc.get("security") or ():
        body = bytearray()
        for name, scopes in requirement.items():
            array = bytearray()
            _strings(array, 1, scopes)
            _named(body, 1, str(name), array)
        _message(out, 12, body)
    security = doc.get("securityDefinitions")
    if isinstance(security, Mapping):
        body = bytearray()
        for name, scheme in security.items():
            _named(body, 1, str(name), _security_definition(scheme))
        _message(out, 13, body)
    _vendor(out, 16, doc)
    return bytes(out)


# -- messages --------------------------------------------------------------------------------


def _schema(schema: Any) -> bytearray:
    out = bytearray()
    if not isinstance(schema, Mapping):
        return out
    _string(out, 1, schema.get("$ref"))
    for number, key in ((2, "format"), (3, "title"), (4, "description")):
        _string(out, number, schema.get(key))
    _any(out, 5, schema, "default")
    for number, key in ((6, "multipleOf"), (7, "maximum")):
        _double(out, number, schema.get(key))
    _bool(out, 8, schema.get("exclusiveMaximum"))
    _double(out, 9, schema.get("minimum"))
    _bool(out, 10, schema.get("exclusiveMinimum"))
    for number, key in ((11, "maxLength"), (12, "minLength")):
        _int(out, number, schema.get(key))
    _string(out, 13, schema.get("pattern"))
    for number, key in ((14, "maxItems"), (15, "minItems")):
        _int(out, number, schema.get(key))
    _bool(out, 16, schema.get("uniqueItems"))
    for number, key in ((17, "maxProperties"), (18, "minProperties")):
        _int(out, number, schema.get(key))
    _strings(out, 19, schema.get("required"))
    for value in schema.get("enum") or ():
        _message(out, 20, _any_value(value))
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        item = bytearray()
        _message(item, 1, _schema(additional))
        _message(out, 21, item)
    elif isinstance(additional, bool):
        item = bytearray()
        _varint_field(item, 2, int(additional))
        _message(out, 21, item)
    declared = schema.get("type")
    if declared:
        item = bytearray()
        _strings(item, 1, [declared] if isinstance(declared, str) else declared)
        _message(out, 22, item)
    items = schema.get("items")
    if items is not None:
        item = bytearray()
        for element in items if isinstance(items, list) else [items]:
            _message(item, 1, _schema(element))
        _message(out, 23, item)
    for element in schema.get("allOf") or ():
        _message(out, 24, _schema(element))
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        item = bytearray()
        for name, child in properties.items():
            _named(item, 1, str(name), _schema(child))
        _message(out, 25, item)
    _string(out, 26, schema.get("discriminator"))
    _bool(out, 27, schema.get("readOnly"))
    _any(out, 30, schema, "example")
    _vendor(out, 31, schema)
    return out


def _path_item(item: Mapping[str, Any]) -> bytearray:
    out = bytearray()
    _string(out, 1, item.get("$ref"))
    for verb, number in _OPERATIONS.items():
        operation = item.get(verb)
        if isinstance(operation, Mapping):
            _message(out, number, _operation(operation))
    for parameter in item.get("parameters") or ():
        _message(out, 9, _parameters_item(parameter))
    _vendor(out, 10, item)
    return out


def _operation(operation: Mapping[str, Any]) -> bytearray:
    out = bytearray()
    _strings(out, 1, operation.get("tags"))
    _string(out, 2, operation.get("summary"))
    _string(out, 3, operation.get("description"))
    _string(out, 5, operation.get("operationId"))
    _strings(out, 6, operation.get("produces"))
    _strings(out, 7, operation.get("consumes"))
    for parameter in operation.get("parameters") or ():
        _message(out, 8, _parameters_item(parameter))
    responses = operation.get("responses")
    if isinstance(responses, Mapping):
        body = bytearray()
        for code, response in responses.items():
            if str(code).startswith("x-"):
                continue
            value = bytearray()
            if isinstance(response, Mapping) and "$ref" in response:
                _message(value, 2, _json_reference(response))
            else:
                _message(value, 1, _response(response))
            _named(body, 1, str(code), value)
        _vendor(body, 2, responses)
        _message(out, 9, body)
    _strings(out, 10, operation.get("schemes"))
    _bool(out, 11, operation.get("deprecated"))
    _vendor(out, 13, operation)
    return out


def _response(response: Any) -> bytearray:
    out = bytearray()
    if not isinstance(response, Mapping):
        return out
    _string(out, 1, response.get("description"))
    schema = response.get("schema")
    if isinstance(schema, Mapping):
        item = bytearray()
        _message(item, 1, _schema(schema))
        _message(out, 2, item)
    _vendor(out, 5, response)
    return out


def _json_reference(reference: Mapping[str, Any]) -> bytearray:
    out = bytearray()
    _string(out, 1, reference.get("$ref"))
    _string(out, 2, reference.get("description"))
    return out


def _parameters_item(parameter: Any) -> bytearray:
    out = bytearray()
    if not isinstance(parameter, Mapping):
        return out
    if "$ref" in parameter:
        _message(out, 2, _json_reference(parameter))
        return out
    wrapped = bytearray()
    where = parameter.get("in")
    if where == "body":
        body = bytearray()
        _string(body, 1, parameter.get("description"))
        _string(body, 2, parameter.get("name"))
        _string(body, 3, where)
        _bool(body, 4, parameter.get("required"))
        if isinstance(parameter.get("schema"), Mapping):
            _message(body, 5, _schema(parameter["schema"]))
        _vendor(body, 6, parameter)
        _message(wrapped, 1, body)
    else:
        # Header, formData, query and path sub-schemas share this layout after ``name``; the
        # formData and query ones have allowEmptyValue (5) and so every later field moves by one.
        number = {"header": 1, "formData": 2, "query": 3, "path": 4}.get(str(where), 3)
        shifted = 1 if number in (2, 3) else 0
        sub = bytearray()
        _bool(sub, 1, parameter.get("required"))
        _string(sub, 2, where)
        _string(sub, 3, parameter.get("description"))
        _string(sub, 4, parameter.get("name"))
        if shifted:
            _bool(sub, 5, parameter.get("allowEmptyValue"))
        _string(sub, 5 + shifted, parameter.get("type"))
        _string(sub, 6 + shifted, parameter.get("format"))
        _string(sub, 8 + shifted, parameter.get("collectionFormat"))
        _any(sub, 9 + shifted, parameter, "default")
        _bool(sub, 19 + shifted, parameter.get("uniqueItems"))
        for value in parameter.get("enum") or ():
            _message(sub, 20 + shifted, _any_value(value))
        _vendor(sub, 22 + shifted, parameter)
        non_body = bytearray()
        _message(non_body, number, sub)
        _message(wrapped, 2, non_body)
    _message(out, 1, wrapped)
    return out


def _security_definition(scheme: Any) -> bytearray:
    out = bytearray()
    if not isinstance(scheme, Mapping):
        return out
    body = bytearray()
    if scheme.get("type") == "apiKey":
        _string(body, 1, "apiKey")
        _string(body, 2, scheme.get("name"))
        _string(body, 3, scheme.get("in"))
        _string(body, 4, scheme.get("description"))
        _vendor(body, 5, scheme)
        _message(out, 2, body)
    elif scheme.get("type") == "basic":
        _string(body, 1, "basic")
        _string(body, 2, scheme.get("description"))
        _vendor(body, 3, scheme)
        _message(out, 1, body)
    return out


# -- values ----------------------------------------------------------------------------------


def _any_value(value: Any) -> bytearray:
    """gnostic's ``Any``: the value as YAML in field 2."""
    out = bytearray()
    _string(out, 2, yaml.safe_dump(value, default_flow_style=False, sort_keys=False))
    return out


def _any(out: bytearray, number: int, source: Mapping[str, Any], key: str) -> None:
    if key in source:
        _message(out, number, _any_value(source[key]))


def _vendor(out: bytearray, number: int, source: Mapping[str, Any]) -> None:
    """Every ``x-`` key as a ``NamedAny``, in document order."""
    for key, value in source.items():
        if str(key).startswith("x-"):
            _named(out, number, str(key), _any_value(value))


def _named(out: bytearray, number: int, name: str, value: bytearray) -> None:
    """A gnostic ``Named*`` pair: name (1), value message (2)."""
    pair = bytearray()
    _string(pair, 1, name)
    _message(pair, 2, value)
    _message(out, number, pair)


def _tag(out: bytearray, number: int, wire: int) -> None:
    _raw_varint(out, number << 3 | wire)


def _raw_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _message(out: bytearray, number: int, body: bytes | bytearray) -> None:
    """An embedded message; always written (proto3 keeps set sub-messages even when empty)."""
    _tag(out, number, _LEN)
    _raw_varint(out, len(body))
    out += body


def _string(out: bytearray, number: int, value: Any) -> None:
    if isinstance(value, str) and value:
        data = value.encode()
        _tag(out, number, _LEN)
        _raw_varint(out, len(data))
        out += data


def _strings(out: bytearray, number: int, values: Any) -> None:
    for value in values or ():
        data = str(value).encode()
        _tag(out, number, _LEN)
        _raw_varint(out, len(data))
        out += data


def _varint_field(out: bytearray, number: int, value: int) -> None:
    _tag(out, number, _VARINT)
    _raw_varint(out, value)


def _bool(out: bytearray, number: int, value: Any) -> None:
    if value is True:
        _varint_field(out, number, 1)


def _int(out: bytearray, number: int, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value:
        _varint_field(out, number, value)


def _double(out: bytearray, number: int, value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value:
        _tag(out, number, _FIXED64)
        out += struct.pack("<d", float(value))
