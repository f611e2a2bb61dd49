"""Real kubectl (the venv's 1.37 and, when present, the system's) against kubesim."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import yaml

from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.kubesim.conftest import Kubectl

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: c
        image: nginx:1.0
        ports: [{containerPort: 80}]
"""

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
"""


async def test_read_commands(kubectl: Kubectl) -> None:
    version = await kubectl.run("version", "-o", "json")
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.37.0"
    resources = (await kubectl.run("api-resources")).stdout
    assert "deployments" in resources
    assert "deploy" in resources
    line = next(x for x in resources.splitlines() if x.startswith("pods "))
    assert line.split()[1:] == ["po", "v1", "true", "Pod"]
    namespaces = (await kubectl.run("get", "ns")).stdout
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert name in namespaces
    assert "STATUS" in namespaces.splitlines()[0]
    nodes = (await kubectl.run("get", "nodes", "-o", "name")).stdout.split()
    assert nodes == ["node/kubesim-node-1", "node/kubesim-node-2"]
    selected = (await kubectl.run("get", "ns", "-l", "kubernetes.io/metadata.name=default")).stdout
    assert "default" in selected
    assert "kube-system" not in selected
    sa = yaml.safe_load((await kubectl.run("get", "sa", "default", "-o", "yaml")).stdout)
    assert sa["kind"] == "ServiceAccount"
    described = (await kubectl.run("describe", "ns", "default")).stdout
    assert "Status:" in described
    assert "Active" in described
    explained = (await kubectl.run("explain", "deployment.spec.replicas")).stdout
    assert "replicas" in explained
    missing = await kubectl.run("get", "cm", "nope", check=False)
    assert missing.returncode == 1
    assert 'configmaps "nope" not found' in missing.stderr


async def test_apply_patch_replace_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "deploy.yaml"
    manifest.write_text(DEPLOYMENT)
    created = await kubectl.run("apply", "-f", str(manifest))
    assert created.stdout.strip() == "deployment.apps/web created"
    manifest.write_text(DEPLOYMENT.replace("replicas: 2", "replicas: 3"))
    configured = await kubectl.run("apply", "-f", str(manifest))
    assert configured.stdout.strip() == "deployment.apps/web configured"
    unchanged = await kubectl.run("apply", "-f", str(manifest))
    assert unchanged.stdout.strip() == "deployment.apps/web unchanged"
    replicas = await kubectl.run("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}")
    assert replicas.stdout == "3"
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT.replace("replicas: 2", "replicas: 2\n  bogus: 1"))
    refused = await kubectl.run("apply", "-f", str(bad), check=False)
    assert refused.returncode != 0
    assert "bogus" in refused.stderr
    ssa = await kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(manifest))
    assert "serverside-applied" in ssa.stdout
    await kubectl.run("label", "deploy", "web", "tier=front")
    await kubectl.run("patch", "deploy", "web", "--type=merge", "-p", '{"spec":{"replicas":4}}')
    await kubectl.run(
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:2"}]',
    )
    await kubectl.run(
        "patch",
        "deploy",
        "web",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}',
    )
    got = json.loads((await kubectl.run("get", "deploy", "web", "-o", "json")).stdout)
    assert got["metadata"]["labels"]["tier"] == "front"
    assert got["spec"]["replicas"] == 4
    # As in kube's docs for kubectl patch: the patch's new container comes first.
    containers = got["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["side", "c"]
    assert containers[1]["image"] == "nginx:2"
    assert got["metadata"]["generation"] >= 4
    got["spec"]["replicas"] = 1
    replaced = await kubectl.run("replace", "-f", "-", stdin=json.dumps(got))
    assert replaced.stdout.strip() == "deployment.apps/web replaced"
    stale = await kubectl.run("replace", "-f", "-", stdin=json.dumps(got), check=False)
    assert stale.returncode != 0
    assert "the object has been modified" in stale.stderr
    wide = (await kubectl.run("get", "deploy", "-l", "tier=front")).stdout
    assert wide.splitlines()[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    deleted = await kubectl.run("delete", "deploy", "web")
    assert 'deployment.apps "web" deleted' in deleted.stdout
    assert (await kubectl.run("get", "deploy", "web", check=False)).returncode == 1


async def test_get_watch_sees_edits(kubectl: Kubectl) -> None:
    await kubectl.run("create", "configmap", "watched", "--from-literal=a=1")
    watcher = await kubectl.start("get", "cm", "watched", "-w", "--output-watch-events")
    assert watcher.stdout is not None
    lines: list[str] = []

    async def read_line() -> str:
        assert watcher.stdout is not None
        async with asyncio.timeout(20):
            return (await watcher.stdout.readline()).decode()

    try:
        while not any("watched" in x for x in lines):
            lines.append(await read_line())
        await kubectl.run("label", "cm", "watched", "x=y")
        while not any("MODIFIED" in x for x in lines):
            lines.append(await read_line())
        await kubectl.run("delete", "cm", "watched")
        while not any("DELETED" in x for x in lines):
            lines.append(await read_line())
    finally:
        watcher.kill()
        await watcher.wait()
    events = [x.split()[0] for x in lines if "watched" in x]
    assert events[0] == "ADDED"
    assert "MODIFIED" in events
    assert events[-1] == "DELETED"


async def test_crd_then_objects(kubectl: Kubectl, tmp_path: Path, sim: KubesimServer) -> None:
    await kubectl.run("apply", "-f", "-", stdin=CRD)
    widget = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {generateName: w-}\nspec: {size: 3}\n"
    )
    created = await kubectl.run("create", "-f", "-", stdin=widget)
    name = created.stdout.split()[0]
    assert name.startswith("widget.example.com/w-")
    table = (await kubectl.run("get", "wd")).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE"]
    assert table[1].split()[1] == "3"
    named = tmp_path / "w.yaml"
    named.write_text(widget.replace("generateName: w-", "name: fixed"))
    await kubectl.run("apply", "-f", str(named))
    named.write_text(widget.replace("generateName: w-", "name: fixed").replace("3", "5"))
    await kubectl.run("apply", "-f", str(named))
    size = await kubectl.run("get", "widget", "fixed", "-o", "jsonpath={.spec.size}")
    assert size.stdout == "5"
    await kubectl.run("delete", "crd", "widgets.example.com")
    await sim.settle()
    gone = await kubectl.run("get", "widgets", check=False)
    assert gone.returncode != 0


async def test_generator_commands_and_can_i(kubectl: Kubectl) -> None:
    commands = [
        ("create", "namespace", "gen"),
        ("create", "configmap", "cm1", "-n", "gen", "--from-literal=a=b"),
        ("create", "secret", "generic", "s1", "-n", "gen", "--from-literal=p=q"),
        ("create", "serviceaccount", "robot", "-n", "gen"),
        ("create", "deployment", "d1", "-n", "gen", "--image=nginx", "--replicas=2"),
        ("create", "service", "clusterip", "svc1", "-n", "gen", "--tcp=80:8080"),
        ("create", "job", "j1", "-n", "gen", "--image=busybox"),
        ("create", "role", "reader", "-n", "gen", "--verb=get,list", "--resource=configmaps"),
        ("create", "rolebinding", "rb", "-n", "gen", "--role=reader", "--serviceaccount=gen:robot"),
        ("create", "clusterrole", "cr1", "--verb=get", "--resource=nodes"),
        ("create", "clusterrolebinding", "crb1", "--clusterrole=cr1", "--user=bob"),
    ]
    for command in commands:
        await kubectl.run(*command)
    secret = json.loads(
        (await kubectl.run("get", "secret", "s1", "-n", "gen", "-o", "json")).stdout
    )
    assert secret["data"] == {"p": "cQ=="}
    token = (await kubectl.run("create", "token", "robot", "-n", "gen")).stdout.strip()
    assert token.count(".") == 2
    assert (await kubectl.run("auth", "can-i", "list", "pods")).stdout.strip() == "yes"
    robot = "system:serviceaccount:gen:robot"
    allowed = await kubectl.run("auth", "can-i", "list", "configmaps", "-n", "gen", "--as", robot)
    assert allowed.stdout.strip() == "yes"
    denied = await kubectl.run(
        "auth", "can-i", "delete", "configmaps", "-n", "gen", "--as", robot, check=False
    )
    assert denied.stdout.strip() == "no"
    assert denied.returncode == 1
    bob = await kubectl.run("auth", "can-i", "get", "nodes", "--as", "bob")
    assert bob.stdout.strip() == "yes"
    as_bob = await kubectl.run("get", "pods", "-n", "gen", "--as", "bob", check=False)
    assert as_bob.returncode == 1
    assert 'User "bob" cannot list resource "pods"' in as_bob.stderr
