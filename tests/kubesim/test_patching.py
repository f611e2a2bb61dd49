"""Merge patch, JSON patch and strategic merge patch against their specifications.

Merge patch cases are RFC 7386 Appendix A; JSON patch cases are RFC 6902 Appendix A plus the
error shape kube-apiserver gives (422 Invalid, "the server rejected our request due to an error
in our request", the library error as the cause). Strategic merge patch cases are the examples
of the Kubernetes task page "Update API Objects in Place Using kubectl patch" and of the
sig-api-machinery strategic-merge-patch.md document, and three-way patches shaped like the ones
``kubectl apply`` sends (``$setElementOrder``, ``$patch: delete``, nulls).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clusternet_aa.sandbox.kubesim import patching
from clusternet_aa.sandbox.kubesim.patching import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from clusternet_aa.sandbox.kubesim.types import KubesimError, ResourceInfo

DEPLOYMENTS = ResourceInfo(
    group="apps",
    version="v1",
    resource="deployments",
    kind="Deployment",
    singular="deployment",
    namespaced=True,
    verbs=("get", "patch"),
)
PODS = ResourceInfo(
    group="",
    version="v1",
    resource="pods",
    kind="Pod",
    singular="pod",
    namespaced=True,
    verbs=("get", "patch"),
)
WIDGETS = ResourceInfo(
    group="example.com",
    version="v1",
    resource="widgets",
    kind="Widget",
    singular="widget",
    namespaced=True,
    verbs=("get", "patch"),
    schema={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
)


# --- RFC 7386 ---------------------------------------------------------------------------------

RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386_EXAMPLES)
def test_merge_patch_rfc7386_appendix_a(target: Any, patch: Any, expected: Any) -> None:
    before = copy.deepcopy(target)
    assert apply_merge_patch(target, patch) == expected
    assert target == before


def test_merge_patch_must_be_an_object() -> None:
    with pytest.raises(KubesimError) as info:
        apply_merge_patch({"a": 1}, ["c"])
    assert (info.value.code, info.value.reason) == (400, "BadRequest")


_scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=5))
_json_no_null = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)
_objects = st.dictionaries(st.text(max_size=3), _json_no_null, max_size=4)


@given(_objects, _objects)
def test_merge_patch_of_a_diff_reproduces_the_target(original: Any, modified: Any) -> None:
    patch = patching.create_merge_patch(original, modified)
    assert apply_merge_patch(original, patch) == modified


# --- RFC 6902 ---------------------------------------------------------------------------------

RFC6902_EXAMPLES: list[tuple[Any, list[Any], Any]] = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    ({"a/b": 1}, [{"op": "copy", "from": "/a~1b", "path": "/c"}], {"a/b": 1, "c": 1}),
]


@pytest.mark.parametrize(("target", "ops", "expected"), RFC6902_EXAMPLES)
def test_json_patch_rfc6902_appendix_a(target: Any, ops: list[Any], expected: Any) -> None:
    before = copy.deepcopy(target)
    assert apply_json_patch(target, ops) == expected
    assert target == before


def json_patch_error(target: Any, ops: Any) -> KubesimError:
    with pytest.raises(KubesimError) as info:
        apply_json_patch(target, ops)
    return info.value


@pytest.mark.parametrize(
    ("target", "ops", "cause"),
    [
        # A.9: test failure.
        ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}], "testing value /baz"),
        # A.12: adding to a nonexistent target.
        (
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            'add operation does not apply: doc is missing path: "/baz/bat"',
        ),
        # A.15: "10" is not 10.
        ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}], "testing value"),
        ({"a": 1}, [{"op": "remove", "path": "/b"}], "Unable to remove nonexistent key: b"),
        ({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}], "doc is missing key: /b"),
        ({"a": [1]}, [{"op": "add", "path": "/a/5", "value": 1}], "invalid index referenced"),
        ({"a": 1}, [{"op": "frobnicate", "path": "/a"}], "Unexpected kind: frobnicate"),
    ],
)
def test_json_patch_failures_are_invalid_with_the_library_cause(
    target: Any, ops: list[Any], cause: str
) -> None:
    error = json_patch_error(target, ops)
    assert (error.code, error.reason) == (422, "Invalid")
    assert error.message == "the server rejected our request due to an error in our request"
    assert error.details is not None
    [only] = error.details["causes"]
    assert only["reason"] == "UnexpectedServerResponse"
    assert cause in only["message"]


def test_json_patch_body_must_be_a_list_and_not_too_long() -> None:
    error = json_patch_error({}, {"op": "add"})
    assert (error.code, error.message) == (
        400,
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
    )
    error = json_patch_error({}, [{"op": "test", "path": "/a", "value": None}] * 10001)
    assert (error.code, error.reason) == (413, "RequestEntityTooLarge")


def test_json_patch_atomicity_leaves_the_input_untouched() -> None:
    target = {"a": [1, 2]}
    json_patch_error(
        target,
        [{"op": "add", "path": "/a/-", "value": 3}, {"op": "test", "path": "/a/0", "value": 9}],
    )
    assert target == {"a": [1, 2]}


@given(_objects, st.text(min_size=1, max_size=5), _json_no_null)
def test_json_patch_add_then_remove_is_identity(doc: Any, key: str, value: Any) -> None:
    pointer = "/" + key.replace("~", "~0").replace("/", "~1")
    doc.pop(key, None)
    added = apply_json_patch(doc, [{"op": "add", "path": pointer, "value": value}])
    assert added[key] == value
    assert apply_json_patch(added, [{"op": "remove", "path": pointer}]) == doc


# --- strategic merge patch --------------------------------------------------------------------


def patch_demo(containers: list[Any], **spec: Any) -> dict[str, Any]:
    """The patch-demo Deployment of the kubectl patch task page."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "patch-demo"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": containers, **spec},
            },
        },
    }


def containers_of(obj: dict[str, Any]) -> list[Any]:
    return obj["spec"]["template"]["spec"]["containers"]  # type: ignore[no-any-return]


def test_smp_merges_containers_by_name_new_ones_first_as_in_the_kubectl_patch_docs() -> None:
    live = patch_demo([{"name": "patch-demo-ctr", "image": "nginx"}])
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}
        }
    }
    result = apply_strategic_merge_patch(live, patch, DEPLOYMENTS)
    # The docs' output lists patch-demo-ctr-2 (redis) before patch-demo-ctr (nginx).
    assert containers_of(result) == [
        {"name": "patch-demo-ctr-2", "image": "redis"},
        {"name": "patch-demo-ctr", "image": "nginx"},
    ]
    assert containers_of(live) == [{"name": "patch-demo-ctr", "image": "nginx"}]
    # A JSON merge patch with the same body replaces the list instead.
    merged = apply_merge_patch(live, patch)
    assert containers_of(merged) == [{"name": "patch-demo-ctr-2", "image": "redis"}]


def test_smp_replaces_lists_without_patch_strategy_like_tolerations() -> None:
    live = patch_demo(
        [{"name": "c", "image": "nginx"}],
        tolerations=[{"effect": "NoSchedule", "key": "dedicated", "value": "test-team"}],
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]
                }
            }
        }
    }
    result = apply_strategic_merge_patch(live, patch, DEPLOYMENTS)
    assert result["spec"]["template"]["spec"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "disktype", "value": "ssd"}
    ]


def test_smp_retain_keys_clears_rolling_update_as_in_the_docs() -> None:
    live = patch_demo([{"name": "c", "image": "nginx"}])
    live["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    plain = {"spec": {"strategy": {"type": "Recreate"}}}
    # Without the directive both keys stay (the docs' failing first attempt).
    assert apply_strategic_merge_patch(live, plain, DEPLOYMENTS)["spec"]["strategy"] == {
        "type": "Recreate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    retain = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    assert apply_strategic_merge_patch(live, retain, DEPLOYMENTS)["spec"]["strategy"] == {
        "type": "Recreate"
    }


def test_smp_retain_keys_must_list_every_patched_key() -> None:
    live = patch_demo([{"name": "c", "image": "nginx"}])
    bad = {"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 1}}}}
    with pytest.raises(KubesimError) as info:
        apply_strategic_merge_patch(live, bad, DEPLOYMENTS)
    assert (info.value.code, info.value.message) == (400, "invalid patch format of retainKeys")


def test_smp_patch_delete_and_replace_directives() -> None:
    live = patch_demo([{"name": "nginx", "image": "nginx"}, {"name": "log", "image": "busybox"}])
    delete = {
        "spec": {"template": {"spec": {"containers": [{"name": "nginx", "$patch": "delete"}]}}}
    }
    result = apply_strategic_merge_patch(live, delete, DEPLOYMENTS)
    assert containers_of(result) == [{"name": "log", "image": "busybox"}]

    replace_list = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}
            }
        }
    }
    result = apply_strategic_merge_patch(live, replace_list, DEPLOYMENTS)
    assert containers_of(result) == [{"name": "only", "image": "x"}]

    replace_map = {"spec": {"selector": {"$patch": "replace", "matchLabels": {"app": "web"}}}}
    result = apply_strategic_merge_patch(live, replace_map, DEPLOYMENTS)
    assert result["spec"]["selector"] == {"matchLabels": {"app": "web"}}

    delete_map = {"spec": {"template": {"metadata": {"$patch": "delete"}}}}
    result = apply_strategic_merge_patch(live, delete_map, DEPLOYMENTS)
    assert result["spec"]["template"]["metadata"] == {}


def test_smp_merges_primitive_lists_and_deletes_from_them() -> None:
    live = {"metadata": {"name": "p", "finalizers": ["a", "b"]}, "spec": {"containers": []}}
    added = apply_strategic_merge_patch(live, {"metadata": {"finalizers": ["c", "a"]}}, PODS)
    assert sorted(added["metadata"]["finalizers"]) == ["a", "b", "c"]
    removed = apply_strategic_merge_patch(
        live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, PODS
    )
    assert removed["metadata"]["finalizers"] == ["b"]


def test_smp_merge_key_missing_is_invalid() -> None:
    live = patch_demo([{"name": "c", "image": "nginx"}])
    bad = {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
    with pytest.raises(KubesimError) as info:
        apply_strategic_merge_patch(live, bad, DEPLOYMENTS)
    assert info.value.code == 422
    assert "does not contain declared merge key: name" in info.value.message


def test_smp_kubectl_apply_three_way_patch() -> None:
    """kubectl apply: update one container, add another, drop an env var and a field."""
    live = patch_demo(
        [
            {
                "name": "web",
                "image": "nginx:1",
                "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            },
            {"name": "injected-sidecar", "image": "envoy"},
        ]
    )
    live["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    patch = {
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}"}},
        "spec": {
            "replicas": None,
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "A"}],
                            "env": [{"$patch": "delete", "name": "B"}],
                            "image": "nginx:2",
                            "name": "web",
                            "ports": [{"containerPort": 8080}],
                            "$setElementOrder/ports": [
                                {"containerPort": 80},
                                {"containerPort": 8080},
                            ],
                        },
                        {"image": "busybox", "name": "log"},
                    ],
                }
            },
        },
    }
    result = apply_strategic_merge_patch(live, patch, DEPLOYMENTS)
    assert "replicas" not in result["spec"]
    assert result["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": "{…}"
    }
    assert containers_of(result) == [
        {
            "name": "web",
            "image": "nginx:2",
            "imagePullPolicy": "IfNotPresent",
            "env": [{"name": "A", "value": "1"}],
            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 8080}],
        },
        {"image": "busybox", "name": "log"},
        {"name": "injected-sidecar", "image": "envoy"},
    ]


def test_smp_set_element_order_alone_reorders() -> None:
    live = patch_demo([{"name": "a"}, {"name": "b"}, {"name": "sidecar"}])
    patch = {
        "spec": {
            "template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
        }
    }
    result = apply_strategic_merge_patch(live, patch, DEPLOYMENTS)
    assert [c["name"] for c in containers_of(result)] == ["b", "a", "sidecar"]


def test_smp_set_element_order_must_agree_with_the_patch_list() -> None:
    live = patch_demo([{"name": "a"}, {"name": "b"}])
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{"name": "b", "image": "x"}],
                }
            }
        }
    }
    with pytest.raises(KubesimError) as info:
        apply_strategic_merge_patch(live, patch, DEPLOYMENTS)
    assert "doesn't match $setElementOrder/ list" in info.value.message


def test_smp_labels_map_merges_and_null_deletes() -> None:
    live = {"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}}
    result = apply_strategic_merge_patch(
        live, {"metadata": {"labels": {"a": None, "c": "3"}}}, PODS
    )
    assert result["metadata"]["labels"] == {"b": "2", "c": "3"}
    # A null for a missing map entry is dropped, not stored.
    result = apply_strategic_merge_patch(
        {"metadata": {}}, {"metadata": {"labels": {"x": None}}}, PODS
    )
    assert result["metadata"]["labels"] == {}


def test_smp_is_unsupported_for_custom_resources() -> None:
    with pytest.raises(KubesimError) as info:
        apply_strategic_merge_patch({"spec": {}}, {"spec": {"a": 1}}, WIDGETS)
    assert (info.value.code, info.value.reason) == (415, "UnsupportedMediaType")
    assert info.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )
