"""Kubeconfig contexts that reach a child cluster through the hub (reference §5.4).

The context's server is ``<parent server>/apis/proxies.clusternet.io/v1alpha1/sockets/<id>/proxy/
direct``; its TLS settings (CA, server name, proxy) are the parent's, and its user is the current
user of the parent: the hub passes the user's identity to the agent, and the child's own RBAC
decides what they may do there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from clusternet_aa.plugin import PROXY_PATH
from clusternet_aa.plugin.clusters import Cluster
from clusternet_aa.plugin.kubectl import Kubectl, PluginError

Doc = dict[str, Any]


async def current(kubectl: Kubectl) -> Doc:
    """The current context with its cluster and user, credentials inlined."""
    view = await kubectl.json("config", "view", "--raw", "--minify", "--flatten")
    if not isinstance(view, dict) or not view.get("contexts") or not view.get("clusters"):
        raise PluginError("no current context in the kubeconfig (use --context or --kubeconfig)")
    return view


def child_kubeconfig(parent: Doc, cluster: Cluster, context_name: str) -> Doc:
    """A self-contained kubeconfig with one context reaching ``cluster`` through the hub."""
    (named_context,) = parent["contexts"]
    (named_cluster,) = parent["clusters"]
    users = parent.get("users") or []
    server = named_cluster["cluster"]["server"].rstrip("/")
    cluster_entry = {
        **named_cluster["cluster"],
        "server": server + PROXY_PATH.format(cluster_id=cluster.cluster_id),
    }
    user_name = named_context["context"].get("user", "")
    context: Doc = {"cluster": f"clusternet-{cluster.name}", "user": user_name}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": f"clusternet-{cluster.name}", "cluster": cluster_entry}],
        "users": users,
        "contexts": [{"name": context_name, "context": context}],
        "current-context": context_name,
    }


def target_file(kubeconfig_flag: str | None) -> Path:
    """Where kubectl writes: --kubeconfig, else the first of $KUBECONFIG, else ~/.kube/config."""
    if kubeconfig_flag:
        return Path(kubeconfig_flag)
    env = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if env:
        return Path(env[0])
    return Path.home() / ".kube" / "config"


def _upsert(entries: list[Doc], entry: Doc) -> str:
    for i, existing in enumerate(entries):
        if existing.get("name") == entry["name"]:
            changed = existing != entry
            entries[i] = entry
            return "configured" if changed else "unchanged"
    entries.append(entry)
    return "created"


def merge(path: Path, child: Doc, *, switch: bool) -> str:
    """Add (or replace) the child's cluster and context in ``path``. The context names the
    current user, whose entry stays where it is (kubectl merges every file of $KUBECONFIG when
    it reads them). Returns created, configured or unchanged."""
    try:
        document: Doc = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    except (OSError, yaml.YAMLError) as exc:
        raise PluginError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise PluginError(f"{path} is not a kubeconfig")
    document.setdefault("apiVersion", "v1")
    document.setdefault("kind", "Config")
    for key in ("clusters", "contexts", "users"):
        if document.get(key) is None:
            document[key] = []
    _upsert(document["clusters"], child["clusters"][0])
    outcome = _upsert(document["contexts"], child["contexts"][0])
    if switch:
        document["current-context"] = child["contexts"][0]["name"]
    write(path, document)
    return outcome


def write(path: Path, document: Doc) -> None:
    """Atomically, mode 0600 (kubeconfigs hold credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(document, handle, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
