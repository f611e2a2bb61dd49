"""The protobuf OpenAPI v2 document: what kubectl's List validation and explain v2 read."""

from __future__ import annotations

import json
import struct

import pytest

from clusternet_aa.sandbox.kubesim.openapi_proto import (
    OPENAPI_V2_PROTOBUF,
    encode_document,
    wants_protobuf,
)
from tests.kubesim.conftest import Kubectl, Raw

CLIENT_GO_ACCEPT = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"

LIST = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "l1"}, "data": {"a": "b"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "l2"}},
    ],
}


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (CLIENT_GO_ACCEPT, True),
        (OPENAPI_V2_PROTOBUF, True),
        ("application/json", False),
        ("", False),
        ("application/json, " + CLIENT_GO_ACCEPT, False),
        (CLIENT_GO_ACCEPT + ", application/json", True),
    ],
)
def test_negotiation(accept: str, expected: bool) -> None:
    assert wants_protobuf(accept) is expected


def test_encoding_of_a_small_document() -> None:
    doc = {
        "swagger": "2.0",
        "info": {"title": "T", "version": "v"},
        "definitions": {
            "D": {
                "type": "object",
                "required": ["a"],
                "properties": {"a": {"type": "integer", "minimum": 1}},
                "x-k": {"g": ""},
            }
        },
    }
    # Document{swagger=1, info=2{title=1, version=2}, definitions=9{NamedSchema=1{name=1,
    # value=2 Schema{required=19, type=22{value=1}, properties=25, minimum=9 (double),
    # vendor_extension=31{NamedAny{name=1, Any{yaml=2}}}}}}}, per gnostic's OpenAPIv2.proto.
    body = encode_document(doc)
    assert body.startswith(b"\x0a\x032.0\x12\x06\x0a\x01T\x12\x01v\x4a")
    assert b"\x9a\x01\x01a" in body  # required: ["a"]
    assert b"\xb2\x01\x08\x0a\x06object" in body  # type: TypeItem{value: "object"}
    assert b"\x0a\x03x-k" in body
    assert b"g: ''\n" in body  # the vendor extension as YAML
    assert b"\x49" + struct.pack("<d", 1.0) in body  # minimum: 1 as a double


async def test_served_when_asked(raw: Raw) -> None:
    reply = await raw.get("/openapi/v2", headers={"Accept": CLIENT_GO_ACCEPT})
    assert reply.status == 200
    assert reply.headers["Content-Type"] == OPENAPI_V2_PROTOBUF
    assert isinstance(reply.body, str)  # not JSON
    as_json = await raw.get("/openapi/v2")
    assert as_json.headers["Content-Type"].startswith("application/json")
    assert as_json.body["swagger"] == "2.0"


async def test_kubectl_validates_and_applies_a_list(kubectl: Kubectl) -> None:
    applied = await kubectl.run("apply", "-f", "-", stdin=json.dumps(LIST))
    assert applied.stdout.split("\n")[:2] == [
        "configmap/l1 created",
        "serviceaccount/l2 created",
    ]
    bad = json.loads(json.dumps(LIST))
    bad["items"][0]["bogus"] = 1
    refused = await kubectl.run("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert refused.returncode == 1
    assert 'unknown field "bogus" in io.k8s.api.core.v1.ConfigMap' in refused.stderr
    explained = await kubectl.run("explain", "configmap.data", "--output=plaintext-openapiv2")
    assert "FIELD:    data <map[string]string>" in explained.stdout
