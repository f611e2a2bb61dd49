"""ManagedClusters of the parent, and whether each one's tunnel answers through the hub.

TUNNEL is measured, not read from a field: the plugin asks the child's ``/version`` through
``/apis/proxies.clusternet.io/v1alpha1/sockets/<id>/proxy/direct`` with the user's own
credentials, so it says whether *this user* can reach the child right now:

* ``Up``: the child answered through the hub and the agent's tunnel;
* ``Down``: the hub knows the cluster but its agent has no live tunnel (the hub's 503);
* ``Forbidden``: the parent's RBAC denies this user ``sockets/proxy`` for the cluster;
* ``NoHub``: the parent does not serve ``proxies.clusternet.io`` (no APIService);
* ``Unknown``: the hub does not know the cluster id (404 from the hub);
* ``HubUnavailable``: the APIService exists but the aggregator cannot reach the hub;
* ``Error``: anything else (``-v 1`` logs the message).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from clusternet_aa.plugin import PROXY_PATH
from clusternet_aa.plugin.kubectl import Kubectl, KubectlError, PluginError
from clusternet_aa.plugin.logs import event, gather_with_progress

RESOURCE = "managedclusters.clusters.clusternet.io"
CLUSTER_ID_LABEL = "clusters.clusternet.io/cluster-id"


@dataclass(frozen=True)
class Cluster:
    name: str
    namespace: str
    cluster_id: str
    kubernetes: str
    ready: str
    sync_mode: str
    tunnel: str = ""


def from_object(obj: dict[str, Any]) -> Cluster:
    metadata, spec, status = obj["metadata"], obj.get("spec", {}), obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    return Cluster(
        name=metadata["name"],
        namespace=metadata.get("namespace", ""),
        cluster_id=spec.get("clusterId") or metadata.get("labels", {}).get(CLUSTER_ID_LABEL, ""),
        kubernetes=status.get("k8sVersion") or "<unknown>",
        ready=ready or "Unknown",
        sync_mode=spec.get("syncMode", ""),
    )


async def list_clusters(kubectl: Kubectl, namespace: str | None) -> list[Cluster]:
    scope = ["-n", namespace] if namespace else ["-A"]
    try:
        answer = await kubectl.json("get", RESOURCE, *scope)
    except KubectlError as exc:
        if "doesn't have a resource type" in str(exc) or exc.reason == "NotFound":
            raise PluginError(
                "the parent cluster does not serve ManagedClusters: are Clusternet's CRDs "
                "installed (kubectl apply -k manifests/crds)?"
            ) from exc
        raise
    clusters = [from_object(item) for item in answer.get("items", [])]
    return sorted(clusters, key=lambda c: (c.namespace, c.name))


async def find_cluster(kubectl: Kubectl, ref: str) -> Cluster:
    """A cluster by name, ``namespace/name`` or cluster id; ambiguity is an error."""
    namespace, _, name = ref.rpartition("/")
    clusters = await list_clusters(kubectl, namespace or None)
    matches = [c for c in clusters if name in (c.name, c.cluster_id)]
    if not matches:
        raise PluginError(f'no ManagedCluster named "{ref}" (kubectl clusternet get clusters)')
    if len(matches) > 1:
        places = ", ".join(f"{c.namespace}/{c.name}" for c in matches)
        raise PluginError(f'"{ref}" is ambiguous ({places}): use namespace/name or the cluster id')
    if not matches[0].cluster_id:
        raise PluginError(f"ManagedCluster {matches[0].namespace}/{matches[0].name} has no id")
    return matches[0]


def classify(exc: KubectlError) -> str:
    message = str(exc)
    if exc.reason == "Forbidden" or "forbidden" in message.lower():
        return "Forbidden"
    if "is not connected" in message:
        return "Down"
    if exc.reason == "NotFound" and (
        "page not found" in message or "could not find the requested resource" in message
    ):
        return "NoHub"  # the parent serves no proxies.clusternet.io
    if exc.reason == "NotFound":
        return "Unknown"  # the hub does not know the cluster id
    if exc.reason == "ServiceUnavailable" or "unable to handle" in message:
        return "HubUnavailable"
    return "Error"


async def probe_tunnel(kubectl: Kubectl, cluster: Cluster) -> str:
    path = PROXY_PATH.format(cluster_id=cluster.cluster_id) + "/version"
    try:
        await kubectl.run("get", "--raw", path)
    except KubectlError as exc:
        state = classify(exc)
        event(logging.INFO, "tunnel probe", cluster=cluster.name, state=state, error=str(exc))
        return state
    return "Up"


async def with_tunnels(kubectl: Kubectl, clusters: Sequence[Cluster]) -> list[Cluster]:
    states = await gather_with_progress(
        "tunnel probes", (probe_tunnel(kubectl, c) for c in clusters)
    )
    return [Cluster(**{**asdict(c), "tunnel": s}) for c, s in zip(clusters, states, strict=True)]


def render(clusters: Sequence[Cluster], output: str) -> str:
    if output == "json":
        return json.dumps([asdict(c) for c in clusters], indent=2) + "\n"
    if output == "name":
        return "".join(f"{c.name}\n" for c in clusters)
    header = ["NAME", "ID", "KUBERNETES", "READY", "TUNNEL"]
    rows = [[c.name, c.cluster_id, c.kubernetes, c.ready, c.tunnel] for c in clusters]
    if output == "wide":
        header = ["NAMESPACE", *header, "SYNC MODE"]
        rows = [[c.namespace, *row, c.sync_mode] for c, row in zip(clusters, rows, strict=True)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]  # fmt: skip
    return "\n".join(lines) + "\n"
