"""Server-side apply and managedFields, against the Kubernetes "Server-Side Apply" docs.

The ConfigMap example of the docs page gives the FieldsV1 shape
(``f:metadata: {f:labels: {f:test-label: {}}}, f:data: {f:key: {}}``); the conflict message is
kube's ``Apply failed with 1 conflict: conflict with "<manager>" using <apiVersion>: <path>``
(apiserver fieldmanager conflict.go); list items are ``k:{"name":"c"}`` with a ``.`` member.
"""

from __future__ import annotations

from typing import Any

import pytest

from clusternet_aa.sandbox.kubesim.patching import apply_server_side, record_update
from clusternet_aa.sandbox.kubesim.types import KubesimError, ResourceInfo

CONFIGMAPS = ResourceInfo(
    group="",
    version="v1",
    resource="configmaps",
    kind="ConfigMap",
    singular="configmap",
    namespaced=True,
    verbs=("patch",),
)
DEPLOYMENTS = ResourceInfo(
    group="apps",
    version="v1",
    resource="deployments",
    kind="Deployment",
    singular="deployment",
    namespaced=True,
    verbs=("patch",),
    subresources=("status",),
)
T = "2010-10-10T00:00:00Z"


def cm(data: dict[str, str], **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "test-cm", "namespace": "default"}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def apply(
    existing: Any,
    applied: Any,
    manager: str = "kubectl",
    force: bool = False,
    resource: ResourceInfo = CONFIGMAPS,
) -> dict[str, Any]:
    return apply_server_side(
        existing, applied, manager=manager, force=force, resource=resource, now=T
    )


def managed(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["metadata"]["managedFields"]  # type: ignore[no-any-return]


def test_create_records_the_docs_managed_fields() -> None:
    created = apply(None, cm({"key": "some value"}, **{"test-label": "test"}))
    assert created["data"] == {"key": "some value"}
    assert managed(created) == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T,
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:test-label": {}}}},
        }
    ]


def test_reapply_removes_fields_the_manager_stopped_applying() -> None:
    live = apply(None, cm({"a": "1", "b": "2"}))
    again = apply(live, cm({"a": "1"}))
    assert again["data"] == {"a": "1"}
    assert managed(again)[0]["fieldsV1"] == {"f:data": {"f:a": {}}}


def test_fields_shared_with_another_manager_survive() -> None:
    live = apply(None, cm({"a": "1", "b": "2"}))
    live = apply(live, cm({"b": "2"}), manager="other")
    after = apply(live, cm({"a": "1"}))
    assert after["data"] == {"a": "1", "b": "2"}
    assert {m["manager"] for m in managed(after)} == {"kubectl", "other"}


def test_conflict_with_another_applier_then_force() -> None:
    live = apply(None, cm({"a": "1"}), manager="alice")
    with pytest.raises(KubesimError) as info:
        apply(live, cm({"a": "2"}), manager="bob")
    assert (info.value.code, info.value.reason) == (409, "Conflict")
    assert info.value.message == 'Apply failed with 1 conflict: conflict with "alice": .data.a'
    assert info.value.details == {
        "causes": [
            {
                "reason": "FieldManagerConflict",
                "message": 'conflict with "alice"',
                "field": ".data.a",
            }
        ]
    }
    # Same value: no conflict, shared ownership.
    shared = apply(live, cm({"a": "1"}), manager="bob")
    assert {m["manager"] for m in managed(shared)} == {"alice", "bob"}
    forced = apply(live, cm({"a": "2"}), manager="bob", force=True)
    assert forced["data"] == {"a": "2"}
    assert [m["manager"] for m in managed(forced)] == ["bob"]


def test_conflict_with_an_update_manager_names_its_api_version() -> None:
    created = record_update(
        None, cm({"a": "1", "b": "1"}), manager="kubectl-create", resource=CONFIGMAPS, now=T
    )
    [entry] = managed(created)
    assert (entry["manager"], entry["operation"], entry["apiVersion"]) == (
        "kubectl-create",
        "Update",
        "v1",
    )
    with pytest.raises(KubesimError) as info:
        apply(created, cm({"a": "2", "b": "2"}))
    assert info.value.message == (
        'Apply failed with 2 conflicts: conflicts with "kubectl-create" using v1:\n'
        "- .data.a\n- .data.b"
    )


def test_object_without_managed_fields_belongs_to_before_first_apply() -> None:
    with pytest.raises(KubesimError, match='conflict with "before-first-apply" using v1'):
        apply(cm({"a": "1"}), cm({"a": "2"}))
    merged = apply(cm({"a": "1", "z": "9"}), cm({"a": "1", "b": "2"}))
    assert merged["data"] == {"a": "1", "b": "2", "z": "9"}


def test_update_takes_ownership_of_changed_fields() -> None:
    live = apply(None, cm({"a": "1", "b": "1"}))
    edited = record_update(
        live,
        {**live, "data": {"a": "9", "b": "1"}},
        manager="kubectl-edit",
        resource=CONFIGMAPS,
        now=T,
    )
    owners = {m["manager"]: m["fieldsV1"] for m in managed(edited)}
    assert owners == {"kubectl": {"f:data": {"f:b": {}}}, "kubectl-edit": {"f:data": {"f:a": {}}}}


def deployment(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": containers}},
            **spec,
        },
    }


def test_containers_merge_by_name_and_ports_by_key_with_default_protocol() -> None:
    live = apply(
        None,
        deployment(
            [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}], replicas=2
        ),
        resource=DEPLOYMENTS,
    )
    fields = managed(live)[0]["fieldsV1"]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container == {
        ".": {},
        "f:image": {},
        "f:name": {},
        "f:ports": {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}},
    }
    assert fields["f:spec"]["f:selector"] == {}  # LabelSelector is an atomic map
    sidecar = apply(
        live,
        deployment([{"name": "log", "image": "busybox"}]),
        manager="injector",
        resource=DEPLOYMENTS,
    )
    names = [c["name"] for c in sidecar["spec"]["template"]["spec"]["containers"]]
    assert names == ["web", "log"]
    assert sidecar["spec"]["replicas"] == 2
    # The first manager drops its container: only the injector's stays.
    dropped = apply(sidecar, deployment([], replicas=2), resource=DEPLOYMENTS)
    assert [c["name"] for c in dropped["spec"]["template"]["spec"]["containers"]] == ["log"]


def test_status_is_not_owned_through_the_main_resource() -> None:
    body = deployment([{"name": "web", "image": "nginx"}])
    body["status"] = {"replicas": 1}
    created = apply(None, body, resource=DEPLOYMENTS)
    assert "f:status" not in managed(created)[0]["fieldsV1"]


def test_bad_applies_are_rejected() -> None:
    with pytest.raises(KubesimError, match=r"metadata\.managedFields must be nil"):
        apply(None, {**cm({}), "metadata": {"name": "x", "managedFields": []}})
    bad = deployment([{"image": "nginx"}])
    with pytest.raises(KubesimError) as info:
        apply(None, bad, resource=DEPLOYMENTS)
    assert info.value.code == 400
    assert 'omits key field "name"' in info.value.message
    duplicate = deployment([{"name": "a"}, {"name": "a"}])
    live = apply(None, deployment([{"name": "a"}]), resource=DEPLOYMENTS)
    with pytest.raises(KubesimError, match="duplicate entries for key"):
        apply(live, duplicate, resource=DEPLOYMENTS)
