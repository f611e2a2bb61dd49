"""The typed models: JSON round trips, Go's omission rules, base64 byte fields, unknown fields."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from clusternet_aa import apis
from clusternet_aa.apis import apps, clusters, labels, meta
from clusternet_aa.apis.meta import ModelError
from tests.apis import examples

UTC = dt.UTC


def prune_empty(value: Any) -> Any:
    """Drop empty objects and arrays (Go's omitempty drops what YAML authors write as {} or [])."""
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [prune_empty(v) for v in value]
    return value


# --- base64 (Go []byte) -----------------------------------------------------------------------

#: RFC 4648 §10 test vectors, plus bytes that differ between the standard and URL alphabets.
VECTORS = [
    (b"", ""),
    (b"f", "Zg=="),
    (b"fo", "Zm8="),
    (b"foo", "Zm9v"),
    (b"foob", "Zm9vYg=="),
    (b"fooba", "Zm9vYmE="),
    (b"foobar", "Zm9vYmFy"),
    (b"\xfb\xff\xbf", "+/+/"),
    (b"hello", "aGVsbG8="),
]


@pytest.mark.parametrize(("raw", "text"), VECTORS)
def test_bytes_encode_and_decode_like_go(raw: bytes, text: str) -> None:
    assert meta.encode_bytes(raw) == text
    assert meta.decode_bytes(text) == raw


def test_bytes_decoding_ignores_newlines_like_go() -> None:
    assert meta.decode_bytes("Zm9v\r\nYmFy\n") == b"foobar"


@pytest.mark.parametrize("text", ["Zm9vYmFy!", "Zm9vYg", "-_-_", "@@@@"])
def test_bytes_decoding_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ModelError, match="illegal base64"):
        meta.decode_bytes(text)


def test_crr_token_and_ca_are_bytes_in_the_model_and_base64_on_the_wire() -> None:
    obj = examples.load(examples.CRR)
    crr = clusters.ClusterRegistrationRequest.from_dict(obj)
    assert crr.status.token == examples.TOKEN
    assert crr.status.ca_certificate == examples.CA_PEM
    assert crr.status.ca_certificate.startswith(b"-----BEGIN CERTIFICATE-----\n")
    assert crr.approved
    wire = crr.to_dict()["status"]
    assert wire["token"] == obj["status"]["token"]
    assert wire["caCertificate"] == obj["status"]["caCertificate"]
    # A fresh status written by the approver encodes known bytes to the known text.
    status = clusters.ClusterRegistrationRequestStatus(token=b"hello", ca_certificate=b"foobar")
    assert status.to_dict() == {"token": "aGVsbG8=", "caCertificate": "Zm9vYmFy"}


def test_token_stays_out_of_repr() -> None:
    crr = clusters.ClusterRegistrationRequest.from_dict(examples.load(examples.CRR))
    assert examples.TOKEN.decode() not in repr(crr)
    assert "token" not in repr(crr.status)


def test_bad_base64_names_the_field() -> None:
    obj = examples.load(examples.CRR)
    obj["status"]["token"] = "not base64!"
    with pytest.raises(ModelError, match=r"^status\.token: illegal base64"):
        clusters.ClusterRegistrationRequest.from_dict(obj)


def test_description_raw_items_are_the_objects_json() -> None:
    generic = apps.Description.from_dict(examples.load(examples.DESCRIPTION_GENERIC))
    assert generic.spec.deployer == apps.DescriptionDeployer.GENERIC
    assert generic.spec.raw_objects() == [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}},
        examples.DEPLOYMENT_JSON,
    ]
    assert generic.spec.raw[1] == examples.compact(examples.DEPLOYMENT_JSON)
    helm = apps.Description.from_dict(examples.load(examples.DESCRIPTION_HELM))
    assert helm.spec.raw_objects() == [examples.VALUES_JSON]
    assert json.loads(helm.spec.chart_raw[0])["kind"] == "HelmChart"
    # Writing objects back gives Go's compact JSON, base64 on the wire.
    spec = apps.DescriptionSpec(
        deployer="Generic", raw=apps.DescriptionSpec.encode_objects([{"a": [1, 2]}])
    )
    assert spec.to_dict() == {"deployer": "Generic", "raw": ["eyJhIjpbMSwyXX0="]}


def test_helm_release_overrides_are_values_json() -> None:
    release = apps.HelmRelease.from_dict(examples.load(examples.HELM_RELEASE))
    assert release.spec.overrides == examples.compact(examples.VALUES_JSON)
    assert release.spec.values() == examples.VALUES_JSON
    assert apps.HelmReleaseSpec().values() == {}


def test_manifest_template_is_raw_json() -> None:
    obj = examples.load(examples.MANIFEST)
    manifest = apps.Manifest.from_dict(obj)
    assert manifest.template == obj["template"]
    assert manifest.to_dict()["template"] == obj["template"]
    assert manifest.metadata.labels[labels.CONFIG_KIND_LABEL] == "Deployment"
    assert manifest.metadata.finalizers == [
        labels.APPS_FINALIZER,
        labels.FEED_PROTECTION_FINALIZER,
    ]


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(examples.ALL_YAML))
def test_worked_example_round_trips(name: str) -> None:
    obj = examples.load(examples.ALL_YAML[name])
    model = apis.from_dict(obj)
    assert obj["kind"] == type(model).KIND
    out = model.to_dict()
    assert prune_empty(out) == prune_empty(obj)
    again = type(model).from_dict(out)
    assert again == model
    assert again.to_dict() == out
    json.dumps(out)  # plain JSON types only


def test_models_of_every_kind() -> None:
    assert set(examples.all_examples()) - {"Description/helm"} == {
        cls.KIND for cls in apis.KINDS.values()
    }


def test_go_shaped_json_round_trips_exactly() -> None:
    """What a Go client writes (zero structs and non-omitempty fields present) comes back as is."""
    obj = {
        "apiVersion": "clusters.clusternet.io/v1beta1",
        "kind": "ManagedCluster",
        "metadata": {"name": "c1", "namespace": "clusternet-abcde"},
        "spec": {"clusterId": examples.CLUSTER_ID, "syncMode": "Pull"},
        "status": {
            "healthz": False,
            "livez": False,
            "readyz": False,
            "appPusher": False,
            "kubeQPS": 5,
            "nodeStatistics": {},
            "predictorDirectAccess": False,
        },
    }
    model = clusters.ManagedCluster.from_dict(obj)
    assert model.status.app_pusher is False
    assert model.status.kube_qps == 5.0
    assert model.to_dict() == obj


def test_a_new_object_serializes_like_go() -> None:
    assert clusters.ManagedCluster().to_dict() == {
        "apiVersion": "clusters.clusternet.io/v1beta1",
        "kind": "ManagedCluster",
        "metadata": {},
        "spec": {"clusterId": "", "syncMode": ""},
        "status": {
            "healthz": False,
            "livez": False,
            "readyz": False,
            "nodeStatistics": {},
            "predictorDirectAccess": False,
        },
    }
    assert apps.Subscription().to_dict()["spec"] == {"subscribers": [], "feeds": []}
    assert apps.HelmChartSpec(create_namespace=False, wait=True).to_dict() == {
        "repo": "",
        "chartPullSecret": {},
        "chart": "",
        "createNamespace": False,
        "wait": True,
        "targetNamespace": "",
    }


def test_unknown_fields_survive_read_modify_write() -> None:
    obj = examples.load(examples.MANAGED_CLUSTER)
    obj["metadata"]["managedFields"] = [{"manager": "clusternet-agent", "operation": "Update"}]
    obj["metadata"]["resourceVersion"] = "42"
    obj["spec"]["futureSpecField"] = {"x": 1}
    obj["status"]["futureStatusField"] = "kept"
    obj["status"]["conditions"][0]["futureConditionField"] = True
    obj["topLevelExtra"] = [1, 2]
    cluster = clusters.ManagedCluster.from_dict(obj)
    assert cluster.spec.extra == {"futureSpecField": {"x": 1}}
    updated = dataclasses.replace(
        cluster, status=dataclasses.replace(cluster.status, k8s_version="v1.30.0")
    )
    out = updated.to_dict()
    expected = copy.deepcopy(obj)
    expected["status"]["k8sVersion"] = "v1.30.0"
    assert prune_empty(out) == prune_empty(expected)
    assert out["metadata"]["resourceVersion"] == "42"


def test_models_are_frozen() -> None:
    cluster = clusters.ManagedCluster()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cluster.spec = clusters.ManagedClusterSpec()  # type: ignore[misc]


def test_managed_cluster_fields_of_the_status_report() -> None:
    cluster = clusters.ManagedCluster.from_dict(examples.load(examples.MANAGED_CLUSTER))
    status = cluster.status
    assert cluster.cluster_id == examples.CLUSTER_ID
    assert cluster.ready
    assert status.last_observed_time == dt.datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert (status.k8s_version, status.agent_version, status.platform) == (
        "v1.29.4",
        "v0.18.0",
        "linux/amd64",
    )
    assert status.apiserver_url == "https://10.96.0.1:443"
    assert (status.healthz, status.livez, status.readyz) == (True, True, True)
    assert status.node_statistics == clusters.NodeStatistics(ready_nodes=3)
    assert status.capacity == {"cpu": "16", "memory": "64Gi"}
    assert status.allocatable == {"cpu": "15800m", "memory": "62Gi"}
    assert status.heartbeat_frequency_seconds == 180
    assert (status.kube_qps, status.kube_burst) == (50.0, 100)
    assert status.predictor_enabled
    assert status.predictor_direct_access is False
    init = status.condition(clusters.ConditionType.CLUSTER_INIT)
    assert init is not None
    assert init.reason == clusters.ConditionReason.CLUSTER_INIT_DISABLED
    assert cluster.metadata.labels[labels.CLUSTER_ID_LABEL] == examples.CLUSTER_ID


def test_numbers_given_for_quantities_become_strings() -> None:
    status = clusters.ManagedClusterStatus.from_dict({"capacity": {"cpu": 16, "memory": "1Gi"}})
    assert status.capacity == {"cpu": "16", "memory": "1Gi"}


def test_subscription_fields() -> None:
    sub = apps.Subscription.from_dict(examples.load(examples.SUBSCRIPTION))
    spec = sub.spec
    assert spec.scheduling_strategy == apps.SchedulingStrategy.DIVIDING
    assert spec.dividing_scheduling == apps.DividingScheduling(type="Static")
    assert [s.weight for s in spec.subscribers] == [1, 4]
    assert spec.subscribers[0].cluster_affinity.matches({"region": "eu-west"})
    assert not spec.subscribers[1].cluster_affinity.matches({"region": "eu-west"})
    assert spec.cluster_tolerations[0].tolerates(
        meta.Taint(key=labels.TAINT_CLUSTER_INITIALIZATION, value="x", effect="NoSchedule")
    )
    assert [f.key() for f in spec.feeds] == [
        "v1/Namespace/web",
        "apps/v1/Deployment/web/web",
        "apps.clusternet.io/v1alpha1/HelmChart/default/redis",
    ]
    assert sub.status.replicas["apps/v1/Deployment/web/web"] == [1, 4]
    assert sub.status.replicas["v1/Namespace/web"] == []
    assert sub.status.spec_hash == 2793119450
    assert sub.status.desired_releases == 2


def test_feed_inventory_and_overrides() -> None:
    inventory = apps.FeedInventory.from_dict(examples.load(examples.FEED_INVENTORY))
    order = inventory.spec.feeds[1]
    assert order.desired_replicas == 5
    assert order.replica_json_path == "/spec/replicas"
    assert order.replica_requirements.resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert order.as_feed() == apps.Feed(
        api_version="apps/v1", kind="Deployment", name="web", namespace="web"
    )
    assert inventory.spec.feeds[0].desired_replicas is None
    glob = apps.Globalization.from_dict(examples.load(examples.GLOBALIZATION))
    assert glob.spec.priority == 400
    assert glob.spec.cluster_affinity == meta.LabelSelector(match_labels={"region": "eu-west"})
    assert glob.spec.overrides[1].override_chart
    assert glob.spec.overrides[1].type == apps.OverrideType.HELM
    loc = apps.Localization.from_dict(examples.load(examples.LOCALIZATION))
    assert loc.spec.override_policy == apps.OverridePolicy.APPLY_NOW
    assert json.loads(loc.spec.overrides[0].value)[0]["op"] == "replace"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"status": {"healthz": "yes"}}, r"^status\.healthz: expected a boolean, got string"),
        ({"status": {"kubeBurst": 1.5}}, r"^status\.kubeBurst: expected an integer"),
        ({"status": {"conditions": {}}}, r"^status\.conditions: expected an array"),
        ({"spec": {"taints": [{"key": 1}]}}, r"^spec\.taints\[0\]\.key: expected a string"),
        ({"status": {"lastObservedTime": "yesterday"}}, r"invalid RFC 3339 time"),
        ({"kind": "Subscription"}, r"expected clusters.clusternet.io/v1beta1 ManagedCluster"),
    ],
)
def test_bad_input_is_a_model_error_with_the_path(patch: dict[str, Any], message: str) -> None:
    obj: dict[str, Any] = {"apiVersion": "clusters.clusternet.io/v1beta1", "kind": "ManagedCluster"}
    obj.update(patch)
    with pytest.raises(ModelError, match=message):
        clusters.ManagedCluster.from_dict(obj)


def test_from_dict_refuses_other_kinds() -> None:
    with pytest.raises(ModelError, match="not a Clusternet kind"):
        apis.from_dict({"apiVersion": "v1", "kind": "Pod"})


def test_list_items_without_type_meta() -> None:
    listed = {
        "apiVersion": "apps.clusternet.io/v1alpha1",
        "kind": "BaseList",
        "metadata": {"resourceVersion": "7"},
        "items": [{"metadata": {"name": "b1"}, "spec": {"feeds": []}}],
    }
    (base,) = apps.Base.list_from_dict(listed)
    assert base.name == "b1"
    assert base.to_dict()["kind"] == "Base"


# --- meta helpers -----------------------------------------------------------------------------


def test_time_format() -> None:
    when = meta.parse_time("2026-05-01T12:00:00+02:00")
    assert meta.format_time(when) == "2026-05-01T10:00:00Z"
    assert meta.format_time(dt.datetime(2026, 5, 1, 10, 0, 0, 999)) == "2026-05-01T10:00:00Z"
    assert meta.parse_time("2026-05-01T10:00:00Z") == dt.datetime(2026, 5, 1, 10, tzinfo=UTC)


def test_set_condition_keeps_transition_time_unless_status_changes() -> None:
    t0 = dt.datetime(2026, 5, 1, 9, tzinfo=UTC)
    t1 = dt.datetime(2026, 5, 1, 10, tzinfo=UTC)
    ready = meta.Condition(type="Ready", status="True", reason="ManagedClusterReady")
    first = meta.set_condition([], ready, now=t0)
    assert first[0].last_transition_time == t0
    same = meta.set_condition(first, dataclasses.replace(ready, message="still"), now=t1)
    assert same[0].last_transition_time == t0
    assert same[0].message == "still"
    lost = meta.Condition(type="Ready", status="Unknown", reason="ClusterStatusUnknown")
    changed = meta.set_condition(same, lost, now=t1)
    assert changed[0].last_transition_time == t1
    other = meta.set_condition(changed, meta.Condition(type="ClusterInit", status="True"), now=t1)
    assert [c.type for c in other] == ["Ready", "ClusterInit"]
    assert meta.find_condition(other, "ClusterInit") is other[1]


def test_label_selector_operators() -> None:
    sel = meta.LabelSelector.from_dict(
        {
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "In", "values": ["x", "y"]},
                {"key": "c", "operator": "NotIn", "values": ["z"]},
                {"key": "d", "operator": "Exists"},
                {"key": "e", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"a": "1", "b": "x", "d": ""})
    assert not sel.matches({"a": "1", "b": "x", "d": "", "e": ""})
    assert not sel.matches({"a": "1", "b": "q", "d": ""})
    assert not sel.matches({"a": "1", "b": "x", "c": "z", "d": ""})
    assert meta.LabelSelector().matches({})


def test_toleration_matching() -> None:
    taint = meta.Taint(key=labels.TAINT_CLUSTER_UNSCHEDULABLE, value="x", effect="NoSchedule")
    assert meta.Toleration(operator="Exists").tolerates(taint)
    assert meta.Toleration(key=taint.key, value="x").tolerates(taint)
    assert not meta.Toleration(key=taint.key, value="y").tolerates(taint)
    assert not meta.Toleration(key=taint.key, operator="Exists", effect="NoExecute").tolerates(
        taint
    )


def test_well_known_names() -> None:
    assert labels.CLUSTER_ID_LABEL == "clusters.clusternet.io/cluster-id"
    assert labels.CLUSTER_NAME_LABEL == "clusters.clusternet.io/cluster-name"
    assert labels.OBJECT_CREATED_BY_LABEL == "clusternet.io/created-by"
    assert labels.TAINT_CLUSTER_UNSCHEDULABLE == "clusters.clusternet.io/unschedulable"
    assert labels.LEGACY_CLUSTER_ID_ANNOTATION == "legacy-cluster-id"
    assert labels.registration_name("abc") == "clusternet-abc"
