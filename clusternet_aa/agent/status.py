"""Heartbeats: collect the child's status and report it on the ManagedCluster (reference §3).

Two loops, as Clusternet's agent:

* :class:`StatusCollector` runs every ``--cluster-status-collect-frequency`` against the child:
  ``/version``, ``/healthz``, ``/livez``, ``/readyz``, the nodes (an informer: statistics,
  summed capacity and allocatable, node labels to aggregate), the CIDRs from the control plane
  pods' flags, and what the agent itself is configured with (gates, QPS, predictor).
* :class:`StatusReporter` runs every ``--cluster-status-update-frequency`` against the parent:
  finds the ManagedCluster by its ``cluster-id`` label in the dedicated namespace, merge-patches
  the aggregated node labels, then PUTs ``/status``, re-reading on a conflict. The Ready
  condition's ``lastTransitionTime`` is refreshed on every report: it doubles as the heartbeat.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
import os
import random
import shlex
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from clusternet_aa.agent import quantity
from clusternet_aa.agent.problems import Problems, Retry, classify
from clusternet_aa.agent.settings import AgentSettings
from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import (
    ConditionReason,
    ConditionType,
    ManagedCluster,
    ManagedClusterStatus,
    NodeStatistics,
)
from clusternet_aa.apis.meta import Condition, ModelError
from clusternet_aa.kube import errors
from clusternet_aa.kube.client import JsonObj, KubeClient, resource_path
from clusternet_aa.kube.informers import Informer, ResourceRef

logger = logging.getLogger(__name__)

COLLECT_TOPIC = "status collection"
REPORT_TOPIC = "status report"
#: Resources summed into capacity and allocatable.
SUMMED_RESOURCES = ("cpu", "memory", "nvidia.com/gpu")
#: Node labels marking control-plane nodes, excluded from label aggregation.
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
#: Conflict retries of one status PUT (client-go's DefaultRetry: 5 steps from 10 ms).
CONFLICT_RETRIES = 5


def agent_version() -> str:
    try:
        return "v" + metadata.version("clusternet-aa")
    except metadata.PackageNotFoundError:
        return "v0.0.0-unknown"


class CredentialsRejected(errors.KubeError):
    """The parent answered 401 to the dedicated credentials: the agent must register again."""


class ManagedClusterMissing(errors.KubeError):
    """No ManagedCluster carries this cluster's id in the dedicated namespace."""


# ---------------------------------------------------------------------- pure helpers


def node_statistics(nodes: Iterable[JsonObj]) -> NodeStatistics:
    """Ready condition True/False/Unknown per node; a node without one is lost."""
    counts = collections.Counter[str]()
    for node in nodes:
        conditions = (node.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        counts[str(ready.get("status")) if ready else "lost"] += 1
    return NodeStatistics(
        ready_nodes=counts["True"],
        not_ready_nodes=counts["False"],
        unknown_nodes=counts["Unknown"],
        lost_nodes=counts["lost"],
    )


def summed_resources(nodes: Sequence[JsonObj], field: str) -> dict[str, str]:
    """``status.<field>`` summed over nodes for cpu, memory and (if any node has it) GPUs."""
    result: dict[str, str] = {}
    for name in SUMMED_RESOURCES:
        values = [
            str(((node.get("status") or {}).get(field) or {}).get(name))
            for node in nodes
            if name in (((node.get("status") or {}).get(field)) or {})
        ]
        if values or name != "nvidia.com/gpu":
            result[name] = quantity.total(values)
    return result


def aggregated_labels(
    nodes: Sequence[JsonObj], prefixes: Sequence[str], threshold: float
) -> dict[str, str]:
    """Prefixed labels carried by at least ``threshold`` of the worker nodes."""
    workers = [
        node for node in nodes if not any(key in CONTROL_PLANE_LABELS for key in _labels_of(node))
    ]
    if not workers:
        return {}
    counts = collections.Counter[tuple[str, str]]()
    for node in workers:
        for key, value in _labels_of(node).items():
            if key.startswith(tuple(prefixes)):
                counts[(key, value)] += 1
    chosen = [(pair, n) for pair, n in counts.items() if n >= threshold * len(workers)]
    result: dict[str, str] = {}
    for (key, value), _ in sorted(chosen, key=lambda item: -item[1]):
        result.setdefault(key, value)
    return result


def _labels_of(obj: JsonObj) -> dict[str, str]:
    raw = (obj.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in raw.items()}


def flag_value(pods: Iterable[JsonObj], flag: str) -> str:
    """The value of ``--flag=value`` (or ``--flag value``) in any container's command or args."""
    for pod in pods:
        for container in (pod.get("spec") or {}).get("containers") or []:
            words: list[str] = []
            for part in [*(container.get("command") or []), *(container.get("args") or [])]:
                try:
                    words.extend(shlex.split(str(part)))
                except ValueError:
                    words.append(str(part))
            for index, word in enumerate(words):
                if word.startswith(flag + "="):
                    return word.split("=", 1)[1]
                if word == flag and index + 1 < len(words):
                    return words[index + 1]
    return ""


def ready_condition(healthz: bool, livez: bool, readyz: bool) -> Condition:
    if (livez and readyz) or healthz:
        return Condition(
            type=ConditionType.READY,
            status="True",
            reason=ConditionReason.READY,
            message="managed cluster is ready.",
        )
    return Condition(
        type=ConditionType.READY,
        status="False",
        reason=ConditionReason.NOT_READY,
        message="managed cluster is not ready.",
    )


def merge_ready(
    existing: Sequence[Condition], ready: Condition, now: dt.datetime
) -> list[Condition]:
    """Replace the Ready condition (its lastTransitionTime is the heartbeat); keep the others."""
    out = [c for c in existing if c.type != ConditionType.READY]
    out.insert(0, dataclasses.replace(ready, last_transition_time=now))
    return out


_STATUS_KEYS = frozenset(
    f.metadata["json"] for f in dataclasses.fields(ManagedClusterStatus) if "json" in f.metadata
)


def status_body(current: Mapping[str, Any], status: ManagedClusterStatus) -> dict[str, Any]:
    """``current`` status with every field the agent owns replaced by ``status``."""
    kept = {k: v for k, v in current.items() if k not in _STATUS_KEYS}
    return {**kept, **status.to_dict()}


# ---------------------------------------------------------------------- collecting


class StatusCollector:
    """Keeps :attr:`latest` fresh; ``await run()`` until cancelled."""

    def __init__(self, settings: AgentSettings, child: KubeClient, problems: Problems) -> None:
        self._settings = settings
        self._child = child
        self._problems = problems
        self._nodes = Informer(child, ResourceRef("", "v1", "nodes"))
        self.latest: ManagedClusterStatus | None = None
        self.node_labels: dict[str, str] = {}
        self.collected = asyncio.Event()

    async def run(self) -> None:
        self._nodes.start()
        try:
            retry = Retry(initial=1.0, maximum=self._settings.status_collect_frequency)
            while True:
                try:
                    self.latest = await self.collect()
                except errors.KubeError as exc:
                    self._problems.report(
                        COLLECT_TOPIC, classify(exc), f"cannot read the child cluster: {exc}"
                    )
                    await retry.failed()
                    continue
                retry.succeeded()
                self._problems.resolved(COLLECT_TOPIC)
                self.collected.set()
                await asyncio.sleep(self._settings.status_collect_frequency)
        finally:
            await self._nodes.stop()

    async def _probe(self, path: str) -> bool:
        """True when the child answers 200 on a health endpoint."""
        try:
            with errors.map_api_exceptions():
                response = await self._child.api.call_api(
                    path,
                    "GET",
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _request_timeout=10,
                )
                async with response:
                    await response.read()
                    return bool(response.status == 200)
        except errors.KubeError:
            return False

    async def _nodes_now(self) -> list[JsonObj]:
        if self._nodes.has_synced and self._nodes.last_error is None:
            return self._nodes.items()
        answer = await self._child.request("GET", "/api/v1/nodes")
        return list(answer.get("items") or [])

    async def _pods(self, selector: str) -> list[JsonObj]:
        try:
            answer = await self._child.request(
                "GET", "/api/v1/pods", query={"labelSelector": selector}
            )
        except errors.APIClientError:
            return []  # no right to list pods: fall back to the environment
        return list(answer.get("items") or [])

    async def _cidrs(self) -> tuple[str, str]:
        controller_managers = [
            *await self._pods("component=kube-controller-manager"),
            *await self._pods("app.kubernetes.io/component=kube-controller-manager"),
        ]
        cluster_cidr = flag_value(controller_managers, "--cluster-cidr")
        if not cluster_cidr:
            cluster_cidr = flag_value(await self._pods("k8s-app=kube-proxy"), "--cluster-cidr")
        apiservers = await self._pods("component=kube-apiserver")
        service_cidr = flag_value(apiservers, "--service-cluster-ip-range") or flag_value(
            controller_managers, "--service-cluster-ip-range"
        )
        return (
            cluster_cidr or os.environ.get("CLUSTER_CIDR", ""),
            service_cidr or os.environ.get("SERVICE_CIDR", ""),
        )

    async def collect(self) -> ManagedClusterStatus:
        settings = self._settings
        version = await self._child.request("GET", "/version")
        healthz, livez, readyz = await asyncio.gather(
            self._probe("/healthz"), self._probe("/livez"), self._probe("/readyz")
        )
        nodes = await self._nodes_now()
        cluster_cidr, service_cidr = await self._cidrs()
        self.node_labels = aggregated_labels(
            nodes, settings.labels_aggregate_prefixes, settings.labels_aggregate_threshold
        )
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        return ManagedClusterStatus(
            last_observed_time=now,
            k8s_version=str(version.get("gitVersion") or ""),
            agent_version=agent_version(),
            platform=str(version.get("platform") or ""),
            apiserver_url=self._child.host,
            healthz=healthz,
            livez=livez,
            readyz=readyz,
            app_pusher=settings.app_pusher,
            use_socket=settings.socket_connection,
            kube_qps=settings.kube_api_qps,
            kube_burst=settings.kube_api_burst,
            capacity=summed_resources(nodes, "capacity"),
            allocatable=summed_resources(nodes, "allocatable"),
            cluster_cidr=cluster_cidr,
            service_cidr=service_cidr,
            node_statistics=node_statistics(nodes),
            conditions=[ready_condition(healthz, livez, readyz)],
            heartbeat_frequency_seconds=max(1, round(settings.status_update_frequency)),
            predictor_enabled=bool(settings.feature_gates.get("Predictor")),
            predictor_address=settings.predictor_address,
            predictor_direct_access=settings.predictor_direct_access,
        )


# ---------------------------------------------------------------------- reporting


class StatusReporter:
    """Reports the collector's status on the ManagedCluster; ``await run()`` until cancelled.

    Raises :class:`CredentialsRejected` when the parent stops accepting the dedicated token.
    """

    def __init__(
        self,
        settings: AgentSettings,
        parent: KubeClient,
        *,
        namespace: str,
        cluster_id: str,
        collector: StatusCollector,
        problems: Problems,
    ) -> None:
        self._settings = settings
        self._parent = parent
        self._namespace = namespace
        self._cluster_id = cluster_id
        self._collector = collector
        self._problems = problems
        self._name = ""
        #: Successful reports (for tests and metrics).
        self.reports = 0

    async def run(self) -> None:
        await self._collector.collected.wait()
        retry = Retry(initial=1.0, maximum=self._settings.status_update_frequency)
        while True:
            try:
                await self.report()
            except errors.APIUnauthorized as exc:
                raise CredentialsRejected(f"the parent rejects the dedicated token: {exc}") from exc
            except errors.KubeError as exc:
                self._problems.report(REPORT_TOPIC, classify(exc), self._explain(exc))
                await retry.failed()
                continue
            retry.succeeded()
            self._problems.resolved(REPORT_TOPIC)
            await asyncio.sleep(self._settings.status_update_frequency)

    def _explain(self, exc: errors.KubeError) -> str:
        if isinstance(exc, ManagedClusterMissing):
            return str(exc)
        if isinstance(exc, errors.APITransportError):
            return f"the parent {self._settings.parent_url} is unreachable: {exc}"
        if isinstance(exc, errors.APIForbidden):
            return (
                f"the dedicated ServiceAccount may not update ManagedClusters in "
                f"{self._namespace} ({exc}); is Role {labels.MANAGED_CLUSTER_ROLE} there?"
            )
        return f"cannot report the status: {exc}"

    def _path(self, name: str = "", subresource: str = "") -> str:
        path = resource_path(
            labels.CLUSTERS_GROUP,
            "v1beta1",
            ManagedCluster.PLURAL,
            namespace=self._namespace,
            name=name,
        )
        return f"{path}/{subresource}" if subresource else path

    async def _find(self) -> JsonObj:
        if self._name:
            try:
                return await self._parent.request("GET", self._path(self._name))
            except errors.APINotFound:
                self._name = ""
        answer = await self._parent.request(
            "GET",
            self._path(),
            query={"labelSelector": f"{labels.CLUSTER_ID_LABEL}={self._cluster_id}"},
        )
        items = answer.get("items") or []
        if not items:
            raise ManagedClusterMissing(
                f"no ManagedCluster labelled {labels.CLUSTER_ID_LABEL}={self._cluster_id} in "
                f"{self._namespace}: was it deleted? reports resume once it is back"
            )
        found: JsonObj = items[0]
        self._name = str((found.get("metadata") or {}).get("name") or "")
        return found

    async def report(self) -> None:
        collected = self._collector.latest
        if collected is None:
            return
        current = await self._find()
        current = await self._patch_labels(current)
        for attempt in range(CONFLICT_RETRIES):
            try:
                cluster = ManagedCluster.from_dict(current)
            except ModelError as exc:
                raise errors.APITransportError(f"malformed ManagedCluster: {exc}") from exc
            now = dt.datetime.now(dt.UTC).replace(microsecond=0)
            ready = collected.condition(ConditionType.READY) or ready_condition(False, False, False)
            status = dataclasses.replace(
                collected, conditions=merge_ready(cluster.status.conditions, ready, now)
            )
            body = dict(current)
            body["status"] = status_body(current.get("status") or {}, status)
            try:
                await self._parent.request("PUT", self._path(cluster.name, "status"), body=body)
            except errors.APIConflict:
                if attempt + 1 == CONFLICT_RETRIES:
                    raise
                await asyncio.sleep(0.01 * (1 + random.uniform(0, 0.1)))
                current = await self._find()
                continue
            self.reports += 1
            logger.debug("reported the status of %s/%s", self._namespace, cluster.name)
            return

    async def _patch_labels(self, current: JsonObj) -> JsonObj:
        """Replace the aggregated node labels; keep every other label."""
        wanted = self._collector.node_labels
        prefixes = tuple(self._settings.labels_aggregate_prefixes)
        existing = _labels_of(current)
        patch: dict[str, str | None] = {
            key: None for key in existing if key.startswith(prefixes) and key not in wanted
        }
        patch.update({k: v for k, v in wanted.items() if existing.get(k) != v})
        if not patch:
            return current
        name = str((current.get("metadata") or {}).get("name") or "")
        return await self._parent.request(
            "PATCH",
            self._path(name),
            body={"metadata": {"labels": patch}},
            content_type="application/merge-patch+json",
        )
