"""Everything a clusternet-agent process is configured with, in one frozen object.

The CLI maps Clusternet's flags one-to-one onto these fields and calls
:meth:`AgentSettings.validate`; nothing else reads flags or the environment (except the
documented ``CLUSTER_CIDR`` / ``SERVICE_CIDR`` fallbacks of the status collector, as upstream).
Defaults are Clusternet's where it has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clusternet_aa import flags
from clusternet_aa.apis import labels
from clusternet_aa.apis.clusters import ClusterType, SyncMode
from clusternet_aa.flags import SettingsError as SettingsError

#: Agent feature gates with their defaults. Upstream every gate defaults to false; this agent
#: exists to hold the tunnel, so ``SocketConnection`` defaults to true (as the agent manifest).
KNOWN_FEATURE_GATES: Mapping[str, bool] = {
    "SocketConnection": True,
    "AppPusher": False,
    "Recovery": False,
    "Predictor": False,
    "MultiClusterService": False,
}

#: Kubernetes bootstrap token (``<id>.<secret>``) or a JWT-looking ServiceAccount token.
_BOOTSTRAP_TOKEN = re.compile(r"\A[a-z0-9]{6}\.[a-z0-9]{16}\Z")
_JWT = re.compile(r"\A[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\Z")
#: A DNS label (what a cluster name must look like); Clusternet's agent allows 60 characters.
_CLUSTER_NAME = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_LABEL_VALUE = re.compile(r"\A(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


def parse_feature_gates(text: str) -> dict[str, bool]:
    """The agent's ``--feature-gates`` (see :func:`clusternet_aa.flags.parse_feature_gates`)."""
    return flags.parse_feature_gates(text, KNOWN_FEATURE_GATES)


def parse_labels(text: str) -> dict[str, str]:
    """``--cluster-labels``: ``k1=v1,k2=v2``."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise SettingsError(f"--cluster-labels: {item!r} is not key=value")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise SettingsError(f"--cluster-labels: invalid label value {value!r}")
        result[key] = value
    return result


@dataclass(frozen=True, kw_only=True)
class LeaderElection:
    """``--leader-elect*``: a coordination.k8s.io Lease in the child (client-go's defaults)."""

    #: ``--leader-elect``: run several replicas, one active.
    enabled: bool = True
    #: ``--leader-elect-resource-namespace``: also where ``parent-cluster`` is kept.
    namespace: str = labels.SYSTEM_NAMESPACE
    #: ``--leader-elect-resource-name``: its uid is the cluster id.
    name: str = labels.CLUSTERNET_AGENT
    #: ``--leader-elect-lease-duration`` in seconds: how long a standby waits before taking over.
    lease_duration: float = 15.0
    #: ``--leader-elect-renew-deadline`` in seconds: the leader gives up if it cannot renew.
    renew_deadline: float = 10.0
    #: ``--leader-elect-retry-period`` in seconds: between attempts to acquire or renew.
    retry_period: float = 2.0


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """One agent process."""

    #: ``--cluster-reg-parent-url``: the parent kube-apiserver (a path prefix is kept).
    parent_url: str
    #: ``--cluster-reg-token``: bootstrap token (or ServiceAccount JWT) allowed to create CRRs.
    bootstrap_token: str
    #: ``--cluster-reg-name``: the cluster's name; random with the prefix below when empty.
    cluster_name: str = ""
    #: ``--cluster-reg-name-prefix``: prefix of a generated name.
    cluster_name_prefix: str = "clusternet-cluster"
    #: ``--cluster-reg-namespace``: desired dedicated namespace in the parent (optional).
    cluster_namespace: str = ""
    #: ``--cluster-reg-type``: StandardCluster or EdgeCluster.
    cluster_type: str = ClusterType.STANDARD.value
    #: ``--cluster-sync-mode``: Push, Pull or Dual.
    sync_mode: str = SyncMode.PULL.value
    #: ``--cluster-labels``: labels asked for the ManagedCluster.
    cluster_labels: Mapping[str, str] = field(default_factory=dict)
    #: ``--labels-aggregate-prefix``: node label prefixes aggregated onto the ManagedCluster.
    labels_aggregate_prefixes: tuple[str, ...] = (labels.NODE_LABELS_PREFIX,)
    #: ``--labels-aggregate-threshold``: share of worker nodes that must carry a label.
    labels_aggregate_threshold: float = 0.8
    #: ``--cluster-status-update-frequency`` in seconds: heartbeat period (PUT /status).
    status_update_frequency: float = 180.0
    #: ``--cluster-status-collect-frequency`` in seconds: how often the status is collected.
    status_collect_frequency: float = 20.0
    #: ``--cluster-reg-retry-period`` in seconds: registration retry and approval poll period
    #: (Clusternet's fixed 5 s; a flag here so tests can be fast).
    registration_retry_period: float = 5.0
    #: ``--kubeconfig``: the child cluster; in-cluster configuration when None.
    kubeconfig: Path | None = None
    #: ``--kube-api-qps`` / ``--kube-api-burst``: reported to the parent (kubeQPS, kubeBurst).
    kube_api_qps: float = 5.0
    kube_api_burst: int = 10
    #: ``--predictor-addr`` / ``--predictor-direct-access``: reported only.
    predictor_address: str = ""
    predictor_direct_access: bool = False
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    #: ``--feature-gates`` after parsing, every known gate present.
    feature_gates: Mapping[str, bool] = field(default_factory=lambda: dict(KNOWN_FEATURE_GATES))
    #: ``--dial-allow``: extra ``host:port`` targets the hub may dial through this agent.
    dial_allow: tuple[str, ...] = ()
    #: ``--hub-url``: dial the hub directly at this URL instead of the parent's aggregated path.
    hub_url: str = ""
    #: ``--hub-ca-file``: CA bundle of the hub's serving certificate (with ``--hub-url``);
    #: the parent's CA from the approval when absent.
    hub_ca_file: Path | None = None
    #: ``--tunnel-keepalive-interval`` in seconds: between keepalive PINGs on the tunnel.
    tunnel_keepalive_interval: float = 15.0
    #: ``--tunnel-keepalive-misses``: missed intervals after which the tunnel is declared dead.
    tunnel_keepalive_misses: int = 3

    @property
    def socket_connection(self) -> bool:
        return bool(self.feature_gates.get("SocketConnection", False))

    @property
    def app_pusher(self) -> bool:
        return bool(self.feature_gates.get("AppPusher", False))

    @property
    def agent_namespace(self) -> str:
        """Where the agent keeps its Lease and the ``parent-cluster`` Secret."""
        return self.leader_election.namespace

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the flag at fault."""
        if not self.parent_url:
            raise SettingsError("--cluster-reg-parent-url is required")
        if not self.parent_url.startswith(("https://", "http://")):
            raise SettingsError("--cluster-reg-parent-url must be an http(s) URL")
        if not self.bootstrap_token:
            raise SettingsError("--cluster-reg-token is required")
        if not (_BOOTSTRAP_TOKEN.match(self.bootstrap_token) or _JWT.match(self.bootstrap_token)):
            raise SettingsError(
                "--cluster-reg-token must be a bootstrap token ([a-z0-9]{6}.[a-z0-9]{16}) "
                "or a ServiceAccount token"
            )
        if self.cluster_name and (
            len(self.cluster_name) > 60 or not _CLUSTER_NAME.match(self.cluster_name)
        ):
            raise SettingsError(
                f"--cluster-reg-name {self.cluster_name!r}: at most 60 lowercase letters, "
                "digits and '-', starting and ending alphanumeric"
            )
        if not self.cluster_name and (
            len(self.cluster_name_prefix) > 54 or not _CLUSTER_NAME.match(self.cluster_name_prefix)
        ):
            raise SettingsError(f"--cluster-reg-name-prefix {self.cluster_name_prefix!r} invalid")
        if len(self.cluster_namespace) > 63:
            raise SettingsError("--cluster-reg-namespace is longer than 63 characters")
        if self.cluster_type not in {t.value for t in ClusterType}:
            raise SettingsError(f"--cluster-reg-type {self.cluster_type!r} is not supported")
        if self.sync_mode not in {m.value for m in SyncMode}:
            raise SettingsError(f"--cluster-sync-mode {self.sync_mode!r} is not supported")
        if self.sync_mode == SyncMode.PUSH and not self.app_pusher:
            raise SettingsError("--cluster-sync-mode=Push needs the feature gate AppPusher=true")
        if not 0 < self.labels_aggregate_threshold <= 1:
            raise SettingsError("--labels-aggregate-threshold must be in (0, 1]")
        for flag, value in (
            ("--cluster-status-update-frequency", self.status_update_frequency),
            ("--cluster-status-collect-frequency", self.status_collect_frequency),
            ("--cluster-reg-retry-period", self.registration_retry_period),
            ("--tunnel-keepalive-interval", self.tunnel_keepalive_interval),
            ("--tunnel-keepalive-misses", self.tunnel_keepalive_misses),
        ):
            if value <= 0:
                raise SettingsError(f"{flag} must be positive")
        election = self.leader_election
        if election.enabled and not (
            election.lease_duration > election.renew_deadline > election.retry_period > 0
        ):
            raise SettingsError(
                "--leader-elect-lease-duration > --leader-elect-renew-deadline > "
                "--leader-elect-retry-period > 0 is required"
            )
        for address in self.dial_allow:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(f"--dial-allow {address!r} is not host:port")
        if self.hub_url and not self.hub_url.startswith(("https://", "http://", "wss://", "ws://")):
            raise SettingsError("--hub-url must be an http(s) or ws(s) URL")
        for flag, path in (("--kubeconfig", self.kubeconfig), ("--hub-ca-file", self.hub_ca_file)):
            if path is not None and not path.is_file():
                raise SettingsError(f"{flag} {path}: no such file")
        unknown = set(self.feature_gates) - set(KNOWN_FEATURE_GATES)
        if unknown:
            raise SettingsError(f"unrecognized feature gate: {', '.join(sorted(unknown))}")
