"""Request bodies: size limit, media type, and decoding JSON, YAML or Kubernetes protobuf.

Every failure is a 4xx Status (400 for bodies that do not parse, 413 over kube-apiserver's
3 MiB limit, 415 for media types kubesim cannot read), so a broken client never sees a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

from clusternet_aa.sandbox.kubesim.types import KubesimError, Obj

#: kube-apiserver's ``MaxRequestBodyBytes``.
MAX_BODY_BYTES = 3 * 1024 * 1024

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"

PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)

#: Decodes a protobuf body into a JSON-shaped object (the openapi helper's decoder).
ProtobufDecoder = Callable[[bytes], Obj]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise KubesimError(
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY_BYTES}"
        )


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise KubesimError(400, "BadRequest", f"json parse error: {e}") from None


def _parse_yaml(body: bytes) -> Any:
    try:
        documents = list(yaml.safe_load_all(body))
    except yaml.YAMLError as e:
        raise KubesimError(400, "BadRequest", f"yaml parse error: {e}") from None
    if len(documents) != 1:
        raise KubesimError(
            400, "BadRequest", f"expected exactly one YAML document, found {len(documents)}"
        )
    return documents[0]


def decode_object(body: bytes, content_type: str | None, protobuf: ProtobufDecoder | None) -> Obj:
    """A create or update body as a JSON object."""
    check_size(body)
    kind = media_type(content_type) or JSON
    if kind == PROTOBUF:
        if protobuf is None:
            raise KubesimError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                f"include: {JSON}, {YAML}",
            )
        return protobuf(body)
    if kind in (JSON, "*/*", "application/*"):
        value = _parse_json(body)
    elif kind in (YAML, "application/x-yaml", "text/yaml"):
        value = _parse_yaml(body)
    else:
        raise KubesimError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON}, {YAML}, {PROTOBUF}",
        )
    if not isinstance(value, dict):
        raise KubesimError(400, "BadRequest", "the body of the request must be a JSON object")
    return value


def decode_patch(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """A PATCH body and its patch type; 415 for anything else, as kube-apiserver answers."""
    check_size(body)
    kind = media_type(content_type)
    if kind not in PATCH_TYPES:
        raise KubesimError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(PATCH_TYPES)}",
        )
    value = _parse_yaml(body) if kind == APPLY_PATCH else _parse_json(body)
    if kind == JSON_PATCH and not isinstance(value, list):
        raise KubesimError(
            400,
            "BadRequest",
            "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp",
        )
    if kind != JSON_PATCH and not isinstance(value, dict):
        raise KubesimError(400, "BadRequest", "the patch must be a JSON object")
    return kind, value


def decode_options(body: bytes, content_type: str | None, protobuf: ProtobufDecoder | None) -> Obj:
    """An optional DeleteOptions body (empty means defaults)."""
    if not body.strip():
        return {}
    return decode_object(body, content_type, protobuf)
