"""Which clusters exist: ManagedClusters in the parent, indexed by cluster id.

A ManagedCluster lives in its cluster's dedicated namespace and carries the label
``clusters.clusternet.io/cluster-id=<id>`` (Clusternet looks clusters up by that label across all
namespaces). The directory watches them through an informer so that the proxy can tell "unknown
cluster" (404) from "known but its agent is not connected" (503) without a request to the parent.

The CRD may not be installed yet when the hub starts (the controller manager installs it): the
informer then retries with backoff and :meth:`ClusterDirectory.is_known` answers None ("cannot
tell") until the first list succeeds. Implements ``proxy.ports.ClusterDirectory``.
"""

from __future__ import annotations

from typing import Any

from clusternet_aa.kube.client import KubeClient
from clusternet_aa.kube.informers import Backoff, EventType, Informer, Key, ResourceRef, object_key

CLUSTER_ID_LABEL = "clusters.clusternet.io/cluster-id"
MANAGED_CLUSTERS = ResourceRef("clusters.clusternet.io", "v1beta1", "managedclusters")

Obj = dict[str, Any]


def cluster_id_of(obj: Obj) -> str:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    value = labels.get(CLUSTER_ID_LABEL)
    return value if isinstance(value, str) else ""


class ClusterDirectory:
    """ManagedClusters by cluster id, kept current by an informer; ``start()`` / ``stop()``."""

    def __init__(self, kube: KubeClient, *, backoff: Backoff | None = None) -> None:
        self.informer = Informer(
            kube,
            MANAGED_CLUSTERS,
            label_selector=CLUSTER_ID_LABEL,
            on_event=self._on_event,
            backoff=backoff or Backoff(initial=0.5, maximum=10.0),
        )
        self._by_id: dict[str, set[Key]] = {}

    def start(self) -> None:
        self.informer.start()

    async def stop(self) -> None:
        await self.informer.stop()

    @property
    def has_synced(self) -> bool:
        return self.informer.has_synced

    def _on_event(self, kind: EventType, obj: Obj) -> None:
        key = object_key(obj)
        for keys in self._by_id.values():
            keys.discard(key)  # a relabelled object leaves its old id
        if kind != "DELETED":
            cluster_id = cluster_id_of(obj)
            if cluster_id:
                self._by_id.setdefault(cluster_id, set()).add(key)
        self._by_id = {cid: keys for cid, keys in self._by_id.items() if keys}

    def is_known(self, cluster_id: str) -> bool | None:
        """True/False once synced; None while the parent has not answered a list yet."""
        if not self.informer.has_synced:
            return None
        return bool(self._by_id.get(cluster_id))

    def get(self, cluster_id: str) -> Obj | None:
        """The ManagedCluster of ``cluster_id`` (the first by namespace/name if several)."""
        for key in sorted(self._by_id.get(cluster_id, ())):
            obj = self.informer.store.get(key)
            if obj is not None:
                return obj
        return None

    def apiserver_url(self, cluster_id: str) -> str:
        """``status.apiserverURL`` as the agent reported it, or empty."""
        obj = self.get(cluster_id)
        value = ((obj or {}).get("status") or {}).get("apiserverURL")
        return value if isinstance(value, str) else ""
