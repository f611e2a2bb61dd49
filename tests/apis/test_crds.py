"""The CRDs in manifests/crds: generated, valid, structural, Clusternet's names, and they accept
the worked examples (and reject what Clusternet's schemas reject)."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate
import pytest
import yaml

from clusternet_aa.sandbox.kubesim import crds as kubesim_crds
from clusternet_aa.sandbox.kubesim import validation
from clusternet_aa.sandbox.kubesim.types import KubesimError
from tests.apis import crdgen, examples

CRD_DIR = crdgen.CRD_DIR
FILES = crdgen.crd_files()


def load_crds() -> dict[str, dict[str, Any]]:
    """Kind -> CRD document."""
    out = {}
    for path in FILES:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path
        out[docs[0]["spec"]["names"]["kind"]] = docs[0]
    return out


CRDS = load_crds()

#: Clusternet's names, scope and subresources, from the reference's §1.1 table.
EXPECTED = {
    # kind: (group, version, plural, scope, shortNames, status subresource)
    "ClusterRegistrationRequest": (
        "clusters.clusternet.io",
        "v1beta1",
        "clusterregistrationrequests",
        "Cluster",
        ["clsrr"],
        True,
    ),
    "ManagedCluster": (
        "clusters.clusternet.io",
        "v1beta1",
        "managedclusters",
        "Namespaced",
        ["mcls"],
        True,
    ),
    "Subscription": (
        "apps.clusternet.io",
        "v1alpha1",
        "subscriptions",
        "Namespaced",
        ["sub", "subs"],
        True,
    ),
    "Base": ("apps.clusternet.io", "v1alpha1", "bases", "Namespaced", [], False),
    "Description": ("apps.clusternet.io", "v1alpha1", "descriptions", "Namespaced", ["desc"], True),
    "HelmChart": (
        "apps.clusternet.io",
        "v1alpha1",
        "helmcharts",
        "Namespaced",
        ["chart", "charts"],
        True,
    ),
    "HelmRelease": ("apps.clusternet.io", "v1alpha1", "helmreleases", "Namespaced", ["hr"], True),
    "Manifest": ("apps.clusternet.io", "v1alpha1", "manifests", "Namespaced", [], False),
    "Localization": (
        "apps.clusternet.io",
        "v1alpha1",
        "localizations",
        "Namespaced",
        ["loc", "local"],
        False,
    ),
    "Globalization": (
        "apps.clusternet.io",
        "v1alpha1",
        "globalizations",
        "Cluster",
        ["glob", "global"],
        False,
    ),
    "FeedInventory": (
        "apps.clusternet.io",
        "v1alpha1",
        "feedinventories",
        "Namespaced",
        ["finv"],
        False,
    ),
}


def version_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    assert isinstance(version, dict)
    return version


def schema_of(kind: str) -> dict[str, Any]:
    schema = version_of(CRDS[kind])["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


# --- files ------------------------------------------------------------------------------------


def test_one_file_per_kind_and_nothing_else() -> None:
    assert set(CRDS) == set(EXPECTED)
    assert len(FILES) == len(EXPECTED)


def test_files_are_what_the_generator_renders() -> None:
    rendered = crdgen.rendered()
    on_disk = {p.name: p.read_text() for p in FILES}
    assert on_disk == rendered, "run `python -m tests.apis.crdgen`"


@pytest.mark.parametrize("path", FILES, ids=lambda p: Path(p).name)
def test_file_name_is_group_and_plural(path: Path) -> None:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert path.name == f"{doc['spec']['group']}_{doc['spec']['names']['plural']}.yaml"


# --- the CRDs as Kubernetes objects -----------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_is_a_valid_apiextensions_v1_crd(kind: str) -> None:
    crd = CRDS[kind]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    # Kubernetes' own schema for CustomResourceDefinition (strict: no unknown fields).
    kubernetes_validate.validate(crd, "1.37.0", strict=True)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_names_scope_and_versions_are_clusternets(kind: str) -> None:
    group, version, plural, scope, short_names, status = EXPECTED[kind]
    crd = CRDS[kind]
    spec = crd["spec"]
    names = spec["names"]
    assert crd["metadata"]["name"] == f"{plural}.{group}"
    assert spec["group"] == group
    assert spec["scope"] == scope
    assert names == {
        "categories": ["clusternet"],
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        **({"shortNames": short_names} if short_names else {}),
        "singular": kind.lower(),
    }
    versions = spec["versions"]
    assert [v["name"] for v in versions] == [version]
    assert sum(1 for v in versions if v["storage"]) == 1
    assert all(v["served"] for v in versions)
    assert ("status" in (versions[0].get("subresources") or {})) is status


def test_short_names_are_unique() -> None:
    seen: list[str] = []
    for crd in CRDS.values():
        seen += crd["spec"]["names"].get("shortNames", [])
        seen.append(crd["spec"]["names"]["singular"])
    assert len(seen) == len(set(seen))


COLUMNS = {
    "ClusterRegistrationRequest": [
        ("CLUSTER ID", ".spec.clusterId", 0),
        ("STATUS", ".status.result", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
    ],
    "ManagedCluster": [
        ("CLUSTER ID", ".spec.clusterId", 0),
        ("CLUSTER TYPE", ".spec.clusterType", 100),
        ("SYNC MODE", ".spec.syncMode", 0),
        ("KUBERNETES", ".status.k8sVersion", 0),
        ("STATUS", ".status.conditions[?(@.type=='Ready')].status", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
        ("AGENT VERSION", ".status.agentVersion", 100),
    ],
    "Description": [
        ("DEPLOYER", ".spec.deployer", 0),
        ("STATUS", ".status.phase", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
    ],
    "HelmChart": [
        ("CHART", ".spec.chart", 0),
        ("VERSION", ".spec.version", 0),
        ("REPO", ".spec.repo", 0),
        ("STATUS", ".status.phase", 0),
        ("AGE", ".metadata.creationTimestamp", 0),
    ],
    "FeedInventory": [],
}
COLUMNS["HelmRelease"] = COLUMNS["HelmChart"]
for _kind in ("Subscription", "Base", "Manifest", "Localization", "Globalization"):
    COLUMNS[_kind] = [("AGE", ".metadata.creationTimestamp", 0)]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_printer_columns_are_clusternets(kind: str) -> None:
    columns = version_of(CRDS[kind]).get("additionalPrinterColumns", [])
    got = [(c["name"], c["jsonPath"], c.get("priority", 0)) for c in columns]
    assert got == COLUMNS[kind]
    for column in columns:
        assert column["type"] == ("date" if column["name"] == "AGE" else "string")


# --- structural schemas -----------------------------------------------------------------------


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from walk(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")
    for key in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(schema.get(key) or []):
            yield from walk(sub, f"{path}<{key}{i}>")


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_schema_is_structural(kind: str) -> None:
    root = schema_of(kind)
    assert root["type"] == "object"
    assert root["properties"]["metadata"] == {"type": "object"}
    for path, node in walk(root):
        in_junctor = "<" in path.rsplit(".", 1)[-1]
        assert "$ref" not in node, path
        assert "additionalProperties" not in node or "properties" not in node, path
        assert not isinstance(node.get("type"), list), path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
            assert [s.get("type") for s in node["anyOf"]] == ["integer", "string"], path
            continue
        if in_junctor:
            # Inside anyOf/allOf only value validations are allowed, no types or descriptions.
            assert set(node) <= {"type", "pattern", "format"}, path
            continue
        assert node.get("type") or node.get("x-kubernetes-preserve-unknown-fields"), (
            f"{kind}{path} has neither a type nor x-kubernetes-preserve-unknown-fields"
        )
        for value in node.get("enum") or []:
            assert isinstance(value, str), path
        if "default" in node:
            jsonschema.validate(node["default"], {k: v for k, v in node.items() if k != "default"})
        if node.get("x-kubernetes-list-type") == "map":
            items = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in items.get("required", []) or "default" in items["properties"][key]


#: Where Clusternet keeps raw, untyped JSON (and nowhere else).
PRESERVE_UNKNOWN = {
    "Manifest": {".template"},
    "Description": {".status.manifestStatuses[].observedStatus"},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_preserve_unknown_fields_only_for_raw_fields(kind: str) -> None:
    found = {
        path
        for path, node in walk(schema_of(kind))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert found == PRESERVE_UNKNOWN.get(kind, set())


#: Go ``[]byte`` fields: base64 strings.
BYTE_FIELDS = {
    "ClusterRegistrationRequest": {".status.token", ".status.caCertificate"},
    "Description": {".spec.raw[]", ".spec.chartRaw[]"},
    "HelmRelease": {".spec.overrides"},
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_byte_fields(kind: str) -> None:
    found = {path for path, node in walk(schema_of(kind)) if node.get("format") == "byte"}
    assert found == BYTE_FIELDS.get(kind, set())


def test_required_fields_and_enums_match_clusternet() -> None:
    mcl = schema_of("ManagedCluster")["properties"]
    assert mcl["spec"]["required"] == ["clusterId", "syncMode"]
    assert mcl["spec"]["properties"]["syncMode"]["enum"] == ["Push", "Pull", "Dual"]
    status = mcl["status"]["properties"]
    for name in ("healthz", "livez", "readyz", "appPusher", "useSocket", "predictorDirectAccess"):
        assert status[name]["type"] == "boolean"
    assert status["heartbeatFrequencySeconds"]["format"] == "int64"
    assert status["lastObservedTime"]["format"] == "date-time"
    assert set(status["conditions"]["items"]["required"]) == {
        "lastTransitionTime",
        "message",
        "reason",
        "status",
        "type",
    }
    crr = schema_of("ClusterRegistrationRequest")["properties"]["spec"]
    assert crr["required"] == ["clusterId"]
    assert crr["properties"]["syncMode"]["default"] == "Pull"
    assert crr["properties"]["clusterName"]["maxLength"] == 30
    sub = schema_of("Subscription")["properties"]["spec"]
    assert sub["required"] == ["feeds", "subscribers"]
    assert sub["properties"]["schedulingStrategy"]["enum"] == ["Replication", "Dividing"]
    assert sub["properties"]["schedulerName"]["default"] == "default"
    loc = schema_of("Localization")["properties"]["spec"]["properties"]
    assert loc["priority"] == {
        "description": loc["priority"]["description"],
        "format": "int32",
        "type": "integer",
        "default": 500,
        "maximum": 1000,
        "minimum": 0,
    }
    assert loc["overrides"]["items"]["properties"]["type"]["enum"] == [
        "Helm",
        "JSONPatch",
        "MergePatch",
        "FieldJSONPatch",
        "FieldMergePatch",
    ]
    assert "clusterAffinity" not in loc
    assert "clusterAffinity" in schema_of("Globalization")["properties"]["spec"]["properties"]
    chart = schema_of("HelmChart")["properties"]["spec"]
    assert chart["required"] == ["chart", "repo", "targetNamespace"]
    assert chart["properties"]["createNamespace"]["default"] is True
    assert chart["properties"]["timeoutSeconds"]["default"] == 300


# --- the worked examples ----------------------------------------------------------------------

_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("byte", raises=(binascii.Error, ValueError))  # type: ignore[untyped-decorator]
def _is_base64(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


def json_schema_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema_of(kind), format_checker=_FORMATS)
    return sorted(
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    )


def kubesim_check(kind: str, obj: dict[str, Any]) -> None:
    (info,) = kubesim_crds.custom_resource_of(CRDS[kind]).infos
    validation.validate_schema(obj, info)


@pytest.mark.parametrize("name", sorted(examples.ALL_YAML))
def test_worked_example_validates(name: str) -> None:
    obj = examples.load(examples.ALL_YAML[name])
    kind = obj["kind"]
    assert json_schema_errors(kind, obj) == []
    kubesim_check(kind, obj)
    (info,) = kubesim_crds.custom_resource_of(CRDS[kind]).infos
    assert validation.unknown_fields(obj, info) == []


BAD = [
    ("ManagedCluster", ("spec", "syncMode"), "Sideways", "is not one of"),
    ("ManagedCluster", ("spec", "clusterId"), "not-a-uuid", "does not match"),
    ("ManagedCluster", ("status", "healthz"), "yes", "is not of type 'boolean'"),
    ("ManagedCluster", ("status", "conditions", 0, "status"), "Maybe", "is not one of"),
    ("ClusterRegistrationRequest", ("spec", "clusterName"), "x" * 31, "is too long"),
    ("ClusterRegistrationRequest", ("status", "token"), "***", "is not a 'byte'"),
    ("Subscription", ("spec", "schedulingStrategy"), "Random", "is not one of"),
    ("Subscription", ("spec", "subscribers", 0, "weight"), -1, "less than the minimum"),
    ("Localization", ("spec", "priority"), 1001, "greater than the maximum"),
    ("Localization", ("spec", "overrides", 0, "type"), "StrategicMergePatch", "is not one of"),
    ("HelmChart", ("spec", "repo"), "ftp://charts", "does not match"),
    ("Description", ("spec", "deployer"), "Kustomize", "is not one of"),
]


@pytest.mark.parametrize(("kind", "path", "value", "message"), BAD, ids=lambda v: str(v))
def test_schema_rejects(kind: str, path: tuple[Any, ...], value: Any, message: str) -> None:
    obj = copy.deepcopy(examples.all_examples()[kind])
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    errors = json_schema_errors(kind, obj)
    assert len(errors) == 1, errors
    assert message in errors[0]


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("ManagedCluster", ("spec", "clusterId")),
        ("ClusterRegistrationRequest", ("spec", "clusterId")),
        ("Subscription", ("spec", "feeds")),
        ("Subscription", ("spec", "subscribers", 0, "clusterAffinity")),
        ("HelmChart", ("spec", "targetNamespace")),
        ("Manifest", ("template",)),
        ("Localization", ("spec", "overrides", 0, "value")),
    ],
)
def test_schema_requires(kind: str, path: tuple[Any, ...]) -> None:
    obj = copy.deepcopy(examples.all_examples()[kind])
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    errors = json_schema_errors(kind, obj)
    assert errors
    assert f"'{path[-1]}' is a required property" in errors[0]
    with pytest.raises(KubesimError):
        kubesim_check(kind, obj)
