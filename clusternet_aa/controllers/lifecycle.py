"""``clusterlifecycle``: mark clusters whose agent stopped reporting, taint unready clusters.

The agent PUTs its ManagedCluster's status every ``heartbeatFrequencySeconds`` and stamps
``lastObservedTime``. When ``now`` passes ``lastObservedTime + heartbeatFrequencySeconds x 3``
(``creationTimestamp`` when the agent never reported; a frequency of 3 minutes when unset) the
controller sets the ``Ready`` condition to ``Unknown`` (reason ``ClusterStatusUnknown``, or
``ClusterStatusNeverUpdated``) and forces ``healthz``, ``livez`` and ``readyz`` false.

The taint ``clusters.clusternet.io/unschedulable:NoSchedule`` (value: the condition's reason)
follows the ``Ready`` condition: present while Ready is False or Unknown, removed when it is
True; other taints are kept. It is written with a JSON merge patch of ``spec.taints`` that
carries the resourceVersion read.

No polling loop: the ManagedCluster watch brings a cluster back when its status changes, and
each reconcile of a fresh cluster schedules the next look at the moment it would go stale
(``queue.add_after``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ConditionReason, ConditionType, ManagedCluster
from clusternet_aa.apis.meta import Condition, ModelError, Taint, set_condition
from clusternet_aa.controllers.base import Controller, PermanentError, split_key
from clusternet_aa.kube.client import KubeClient, resource_path
from clusternet_aa.kube.informers import Informer, ResourceRef

__all__ = ["ClusterLifecycle", "LifecycleSettings", "desired_taints"]

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

MANAGED_CLUSTERS = ResourceRef(labels.CLUSTERS_GROUP, "v1beta1", "managedclusters")


@dataclass(frozen=True, kw_only=True)
class LifecycleSettings:
    #: Missed heartbeats before a cluster is Unknown (Clusternet: 3).
    grace_multiplier: float = 3.0
    #: Heartbeat period assumed when a cluster does not report one (the agent's default 3m).
    default_heartbeat_seconds: float = 180.0
    #: Concurrent reconciles.
    workers: int = 2


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def desired_taints(taints: list[Taint], ready: Condition | None) -> list[Taint]:
    """``taints`` with the unschedulable taint added or removed to follow ``ready``."""
    others = [t for t in taints if t.key != labels.TAINT_CLUSTER_UNSCHEDULABLE]
    if ready is None or ready.status == "True":
        return others
    current = next((t for t in taints if t.key == labels.TAINT_CLUSTER_UNSCHEDULABLE), None)
    wanted = Taint(
        key=labels.TAINT_CLUSTER_UNSCHEDULABLE,
        value=ready.reason,
        effect=labels.TAINT_EFFECT_NO_SCHEDULE,
    )
    if current is not None and current.value == wanted.value and current.effect == wanted.effect:
        wanted = current  # keep timeAdded and anything else as it is
    return [*others, wanted]


class ClusterLifecycle(Controller):
    name = "clusterlifecycle"

    def __init__(self, kube: KubeClient, settings: LifecycleSettings | None = None) -> None:
        self.kube = kube
        self.settings = settings or LifecycleSettings()
        self.clusters = Informer(kube, MANAGED_CLUSTERS, on_event=self.on_event)
        super().__init__([self.clusters], workers=self.settings.workers)

    def threshold(self, cluster: ManagedCluster) -> dt.timedelta:
        frequency = cluster.status.heartbeat_frequency_seconds
        seconds = float(frequency) if frequency else self.settings.default_heartbeat_seconds
        return dt.timedelta(seconds=seconds * self.settings.grace_multiplier)

    async def reconcile(self, key: str) -> None:
        namespace, name = split_key(key)
        obj = self.clusters.get(name, namespace)
        if obj is None:
            return
        try:
            cluster = ManagedCluster.from_dict(obj)
        except ModelError as exc:
            raise PermanentError(f"malformed ManagedCluster: {exc}") from exc
        if cluster.metadata.deletion_timestamp is not None:
            return
        now = _now()
        threshold = self.threshold(cluster)
        last = cluster.status.last_observed_time or cluster.metadata.creation_timestamp or now
        deadline = last + threshold
        if now > deadline:
            obj = await self._mark_unknown(obj, cluster, now)
            cluster = ManagedCluster.from_dict(obj)
        else:
            # look again the moment it would go stale (a heartbeat brings it back earlier)
            self.queue.add_after(key, (deadline - now).total_seconds() + 0.05)
        await self._sync_taints(obj, cluster)

    async def _mark_unknown(self, obj: Obj, cluster: ManagedCluster, now: dt.datetime) -> Obj:
        status = cluster.status
        never = status.last_observed_time is None
        reason = ConditionReason.NEVER_UPDATED if never else ConditionReason.UNKNOWN
        message = (
            "Clusternet agent never posted cluster status."
            if never
            else "Clusternet agent stopped posting cluster status."
        )
        ready = status.condition(ConditionType.READY)
        if (
            ready is not None
            and ready.status == "Unknown"
            and not (status.healthz or status.livez or status.readyz)
        ):
            return obj  # already marked
        new_status = dataclasses.replace(
            status,
            healthz=False,
            livez=False,
            readyz=False,
            conditions=set_condition(
                status.conditions,
                Condition(
                    type=ConditionType.READY, status="Unknown", reason=reason, message=message
                ),
                now=now.replace(microsecond=0),
            ),
        )
        body = dict(obj)
        body["status"] = new_status.to_dict()
        path = resource_path(
            labels.CLUSTERS_GROUP,
            "v1beta1",
            MANAGED_CLUSTERS.plural,
            namespace=cluster.namespace,
            name=cluster.name,
        )
        updated = await self.kube.request("PUT", f"{path}/status", body=body)
        logger.warning(
            "ManagedCluster %s/%s (cluster %s): %s Ready=Unknown",
            cluster.namespace,
            cluster.name,
            cluster.cluster_id,
            message,
        )
        return updated

    async def _sync_taints(self, obj: Obj, cluster: ManagedCluster) -> None:
        ready = cluster.status.condition(ConditionType.READY)
        wanted = desired_taints(cluster.spec.taints, ready)
        if [t.to_dict() for t in wanted] == [t.to_dict() for t in cluster.spec.taints]:
            return
        path = resource_path(
            labels.CLUSTERS_GROUP,
            "v1beta1",
            MANAGED_CLUSTERS.plural,
            namespace=cluster.namespace,
            name=cluster.name,
        )
        patch = {
            "metadata": {"resourceVersion": cluster.metadata.resource_version},
            "spec": {"taints": [t.to_dict() for t in wanted] or None},
        }
        await self.kube.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )
        logger.info(
            "ManagedCluster %s/%s: taints now %s",
            cluster.namespace,
            cluster.name,
            [f"{t.key}={t.value}:{t.effect}" for t in wanted] or "none",
        )
