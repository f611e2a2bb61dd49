"""fieldValidation, CRD pruning and CRD schema checks, against kube-apiserver's messages.

Expected texts: ``strict decoding error: unknown field "spec.template.spec.containers[0].requests"``
(quoted in willthames/kubernetes-validate#31 from a real server), the create-time wrapping
``<Kind> in version "<v>" cannot be handled as a <Kind>: ...`` (apiserver transformDecodeError),
and the CRD validation shape ``spec.replicas: Invalid value: "string": spec.replicas in body must
be of type integer: "string"`` (kube-openapi errors converted to field errors).
"""

from __future__ import annotations

from typing import Any

import pytest

from clusternet_aa.sandbox.kubesim.types import KubesimError, ResourceInfo
from clusternet_aa.sandbox.kubesim.validation import (
    prune,
    unknown_fields,
    validate_fields,
    validate_schema,
)

PODS = ResourceInfo(
    group="",
    version="v1",
    resource="pods",
    kind="Pod",
    singular="pod",
    namespaced=True,
    verbs=("create",),
)
WIDGET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"type": "string", "enum": ["small", "large"]},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
                "name": {"type": "string", "pattern": "^[a-z]+$"},
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"id": {"type": "integer"}}},
                },
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}
WIDGETS = ResourceInfo(
    group="example.com",
    version="v1",
    resource="widgets",
    kind="Widget",
    singular="widget",
    namespaced=True,
    verbs=("create",),
    schema=WIDGET_SCHEMA,
)


def pod(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {}}]},
    }
    body["spec"].update(extra)
    return body


def test_builtin_unknown_fields_are_found_with_kube_paths() -> None:
    body = pod(foo=1)
    body["spec"]["containers"][0]["requests"] = {"cpu": "50m"}
    body["metadata"]["bogus"] = True
    assert unknown_fields(body, PODS) == [
        "metadata.bogus",
        "spec.containers[0].requests",
        "spec.foo",
    ]
    assert unknown_fields(pod(), PODS) == []


def test_strict_create_is_a_bad_request_with_kube_wording() -> None:
    body = pod()
    body["spec"]["containers"][0]["requests"] = {"cpu": "50m"}
    with pytest.raises(KubesimError) as info:
        validate_fields(body, PODS, mode="Strict")
    assert (info.value.code, info.value.reason) == (400, "BadRequest")
    assert info.value.message == (
        'Pod in version "v1" cannot be handled as a Pod: strict decoding error: '
        'unknown field "spec.containers[0].requests"'
    )


def test_strict_patch_is_invalid_naming_the_patch() -> None:
    patch = {"spec": {"volumes2": []}}
    with pytest.raises(KubesimError) as info:
        validate_fields(pod(volumes2=[]), PODS, mode="Strict", verb="patch", patch=patch)
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    assert info.value.details is not None
    [cause] = info.value.details["causes"]
    assert cause["field"] == "patch"
    assert cause["message"] == (
        'Invalid value: "map[spec:map[volumes2:[]]]": strict decoding error: '
        'unknown field "spec.volumes2"'
    )


def test_warn_returns_warnings_and_ignore_nothing() -> None:
    body = pod(foo=1, bar=2)
    assert validate_fields(body, PODS, mode="Warn") == [
        'unknown field "spec.foo"',
        'unknown field "spec.bar"',
    ]
    assert validate_fields(body, PODS, mode="") == validate_fields(body, PODS, mode="Warn")
    assert validate_fields(body, PODS, mode="Ignore") == []
    with pytest.raises(KubesimError, match="fieldValidation parameter unsupported: strict"):
        validate_fields(body, PODS, mode="strict")


def test_crd_unknown_fields_respect_preserve_unknown_and_additional_properties() -> None:
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "annotations": {"x": "y"}},
        "spec": {
            "size": "small",
            "labels": {"any": "thing"},
            "extra": {"anything": {"goes": 1}},
            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "x": 1},
            "items": [{"id": 1, "junk": 2}],
            "color": "red",
        },
        "junk": 1,
    }
    assert unknown_fields(body, WIDGETS) == ["junk", "spec.color", "spec.items[0].junk"]
    pruned = prune(body, WIDGETS)
    assert pruned["spec"]["items"] == [{"id": 1}]
    assert "color" not in pruned["spec"]
    assert "junk" not in pruned
    assert pruned["spec"]["extra"] == {"anything": {"goes": 1}}
    assert pruned["metadata"] == body["metadata"]
    assert body["junk"] == 1


def test_crd_object_without_properties_prunes_everything() -> None:
    closed = ResourceInfo(
        group="example.com",
        version="v1",
        resource="things",
        kind="Thing",
        singular="thing",
        namespaced=True,
        verbs=(),
        schema={"type": "object", "properties": {"spec": {"type": "object"}}},
    )
    body = {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "t"},
        "spec": {"a": 1},
    }
    assert prune(body, closed)["spec"] == {}


def invalid(body: dict[str, Any]) -> KubesimError:
    with pytest.raises(KubesimError) as info:
        validate_schema(body, WIDGETS)
    assert (info.value.code, info.value.reason) == (422, "Invalid")
    return info.value


def widget(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": "small", **spec},
    }


def test_crd_type_error_matches_kube() -> None:
    error = invalid(widget(replicas="string"))
    assert error.message == (
        'Widget.example.com "w" is invalid: spec.replicas: Invalid value: "string": '
        'spec.replicas in body must be of type integer: "string"'
    )
    assert error.details is not None
    assert error.details["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "string": spec.replicas in body must be of type integer: '
            '"string"',
            "field": "spec.replicas",
        }
    ]


def test_crd_required_enum_bounds_pattern() -> None:
    assert (
        "spec.size: Required value"
        in invalid(
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "w"},
                "spec": {},
            }
        ).message
    )
    assert (
        'spec.size: Unsupported value: "huge": supported values: "small", "large"'
        in invalid(widget(size="huge")).message
    )
    assert (
        "spec.replicas in body should be greater than or equal to 1"
        in invalid(widget(replicas=0)).message
    )
    assert (
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
        in invalid(widget(replicas=11)).message
    )
    assert "spec.name in body should match '^[a-z]+$'" in invalid(widget(name="A1")).message
    missing_spec = invalid({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}})
    assert missing_spec.message.endswith("spec: Required value")
    two = invalid(widget(replicas=0, name="A"))
    assert two.message.startswith('Widget.example.com "w" is invalid: [')


def test_crd_valid_objects_pass() -> None:
    validate_schema(widget(replicas=3, name="abc", port="http", items=[{"id": 1}]), WIDGETS)
    validate_schema(widget(port=8080, replicas=3.0), WIDGETS)
    validate_schema(pod(), PODS)
