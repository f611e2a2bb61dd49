"""More real-kubectl flows (both binaries): selectors, status patches, SSA conflicts, bad input."""

from __future__ import annotations

import json

from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.kubesim.conftest import Kubectl

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status: {type: object, properties: {ready: {type: boolean}}}
"""

GIZMO = """\
apiVersion: example.com/v1
kind: Gizmo
metadata: {name: g1}
spec: {size: 1}
status: {ready: true}
"""

SSA = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {a: '%s'}\n"


async def get_json(kubectl: Kubectl, *args: str) -> dict[str, object]:
    out = await kubectl.run("get", *args, "-o", "json")
    obj: dict[str, object] = json.loads(out.stdout)
    return obj


async def test_label_selector_forms(kubectl: Kubectl) -> None:
    labelled = {"cx": "{a: x}", "cy": "{a: 'y'}", "cz": "{a: z}", "cn": "{b: '1'}"}
    documents = [
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {labels}}}\n"
        for name, labels in labelled.items()
    ]
    await kubectl.run("apply", "-f", "-", stdin="---\n".join(documents))

    async def selected(selector: str) -> list[str]:
        out = await kubectl.run("get", "cm", "-l", selector, "-o", "name")
        return sorted(x.removeprefix("configmap/") for x in out.stdout.split())

    assert await selected("a in (x,y)") == ["cx", "cy"]
    assert await selected("a notin (x,y),b") == ["cn"]
    assert await selected("!a") == ["cn", "kube-root-ca.crt"]
    assert await selected("a") == ["cx", "cy", "cz"]
    assert await selected("a!=x,a") == ["cy", "cz"]
    assert await selected("a==z") == ["cz"]
    bad = await kubectl.run("get", "cm", "-l", "a in (x", check=False)
    assert bad.returncode == 1


async def test_status_subresource_of_a_crd(kubectl: Kubectl, sim: KubesimServer) -> None:
    await kubectl.run("apply", "-f", "-", stdin=CRD)
    await sim.settle()
    await kubectl.run("create", "-f", "-", stdin=GIZMO)
    made = await get_json(kubectl, "gizmo", "g1")
    assert "status" not in made, "create ignores status when there is a status subresource"
    await kubectl.run(
        "patch",
        "gizmo",
        "g1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"ready":true},"spec":{"size":9}}',
    )
    after_status = await get_json(kubectl, "gizmo", "g1")
    assert after_status["status"] == {"ready": True}
    assert after_status["spec"] == {"size": 1}, "a status write ignores spec"
    assert after_status["metadata"]["generation"] == 1  # type: ignore[index]
    await kubectl.run(
        "patch", "gizmo", "g1", "--type=merge", "-p", '{"status":{"ready":false},"spec":{"size":2}}'
    )
    after_main = await get_json(kubectl, "gizmo", "g1")
    assert after_main["status"] == {"ready": True}, "a main-resource write ignores status"
    assert after_main["spec"] == {"size": 2}
    assert after_main["metadata"]["generation"] == 2  # type: ignore[index]
    await kubectl.run(
        "patch",
        "gizmo",
        "g1",
        "--subresource=status",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/status/ready","value":false}]',
    )
    ready = await kubectl.run("get", "gizmo", "g1", "-o", "jsonpath={.status.ready}")
    assert ready.stdout == "false"
    strategic = await kubectl.run(
        "patch", "gizmo", "g1", "--type=strategic", "-p", '{"spec":{"size":3}}', check=False
    )
    assert strategic.returncode == 1
    assert "application/strategic-merge-patch+json is not supported" in strategic.stderr


async def test_strategic_patch_of_a_builtin(kubectl: Kubectl) -> None:
    await kubectl.run("create", "deployment", "web", "--image=nginx:1", "--port=80")
    await kubectl.run(
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        json.dumps(
            {
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {"name": "nginx", "ports": [{"containerPort": 443}]},
                                {"name": "side", "image": "busybox"},
                            ]
                        }
                    }
                }
            }
        ),
    )
    deployment = await get_json(kubectl, "deployment", "web")
    containers = deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    by_name = {c["name"]: c for c in containers}
    assert sorted(by_name) == ["nginx", "side"]
    assert by_name["nginx"]["image"] == "nginx:1", "merged by name, not replaced"
    ports = sorted(p["containerPort"] for p in by_name["nginx"]["ports"])
    assert ports == [80, 443], "ports merge by containerPort"
    await kubectl.run(
        "patch",
        "deployment",
        "web",
        "--type=strategic",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"side","$patch":"delete"}]}}}}',
    )
    left = await get_json(kubectl, "deployment", "web")
    names = [c["name"] for c in left["spec"]["template"]["spec"]["containers"]]  # type: ignore[index]
    assert names == ["nginx"]
    described = (await kubectl.run("describe", "deployment", "web")).stdout
    assert "StrategyType:           RollingUpdate" in described
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in described
    assert "nginx:1" in described


async def test_server_side_apply_twice_and_conflict(kubectl: Kubectl) -> None:
    first = await kubectl.run("apply", "--server-side", "-f", "-", stdin=SSA % "1")
    assert first.stdout.strip() == "configmap/owned serverside-applied"
    again = await kubectl.run("apply", "--server-side", "-f", "-", stdin=SSA % "1")
    assert again.stdout.strip() == "configmap/owned serverside-applied"
    rv = await kubectl.run("get", "cm", "owned", "-o", "jsonpath={.metadata.resourceVersion}")
    conflict = await kubectl.run(
        "apply", "--server-side", "--field-manager=other", "-f", "-", stdin=SSA % "2", check=False
    )
    assert conflict.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .data.a' in conflict.stderr
    unchanged = await kubectl.run(
        "get", "cm", "owned", "-o", "jsonpath={.metadata.resourceVersion} {.data.a}"
    )
    assert unchanged.stdout == f"{rv.stdout} 1", "a refused apply writes nothing"
    shared = await kubectl.run(
        "apply", "--server-side", "--field-manager=other", "-f", "-", stdin=SSA % "1"
    )
    assert "serverside-applied" in shared.stdout, "applying the same value co-owns it"
    forced = await kubectl.run(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        stdin=SSA % "3",
    )
    assert "serverside-applied" in forced.stdout
    obj = await get_json(kubectl, "cm", "owned", "--show-managed-fields")
    assert obj["data"] == {"a": "3"}
    managers = {m["manager"]: m for m in obj["metadata"]["managedFields"]}  # type: ignore[index]
    assert "f:a" in json.dumps(managers["other"]["fieldsV1"])
    assert "f:a" not in json.dumps(managers.get("kubectl", {}).get("fieldsV1", {}))


async def test_bad_input_is_a_4xx(kubectl: Kubectl) -> None:
    bad = await kubectl.run(
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        "-",
        stdin="a: [b\n",
        check=False,
    )
    assert bad.returncode == 1
    assert "Error from server (BadRequest)" in bad.stderr
    mismatch = await kubectl.run(
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        "-",
        stdin=json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "o"}}
        ),
        check=False,
    )
    assert "Error from server (BadRequest)" in mismatch.stderr
    assert "does not match the namespace" in mismatch.stderr
    missing_name = await kubectl.run(
        "create", "-f", "-", stdin="apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", check=False
    )
    assert missing_name.returncode == 1
    assert "name or generateName is required" in missing_name.stderr


async def test_namespace_deletion_and_garbage_collection(
    kubectl: Kubectl, sim: KubesimServer
) -> None:
    await kubectl.run("create", "namespace", "doomed")
    await kubectl.run("create", "configmap", "inside", "-n", "doomed")
    await kubectl.run("create", "deployment", "owner", "--image=nginx")
    uid = (await kubectl.run("get", "deploy", "owner", "-o", "jsonpath={.metadata.uid}")).stdout
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "owned-by-deploy",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": uid}
            ],
        },
    }
    await kubectl.run("create", "-f", "-", stdin=json.dumps(owned))
    deleted = await kubectl.run("delete", "namespace", "doomed", "--timeout=20s")
    assert 'namespace "doomed" deleted' in deleted.stdout
    gone = await kubectl.run("get", "cm", "inside", "-n", "doomed", check=False)
    assert "NotFound" in gone.stderr
    await kubectl.run("delete", "deployment", "owner", "--wait=true")
    await sim.settle()
    collected = await kubectl.run("get", "cm", "owned-by-deploy", check=False)
    assert 'configmaps "owned-by-deploy" not found' in collected.stderr
