"""Everything a hub process is configured with, in one frozen object.

The CLI maps flags one-to-one onto these fields and calls :meth:`HubSettings.validate`; nothing
else reads flags or the environment. Defaults are kube's or Clusternet's where they have one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clusternet_aa import flags
from clusternet_aa.flags import SettingsError as SettingsError

#: Feature gates the hub knows, with their defaults (Clusternet's hub manifest turns on
#: SocketConnection; the gate itself defaults to false upstream, here to true).
KNOWN_FEATURE_GATES: Mapping[str, bool] = {"SocketConnection": True}


def parse_feature_gates(
    text: str, known: Mapping[str, bool] = KNOWN_FEATURE_GATES
) -> dict[str, bool]:
    """The hub's ``--feature-gates`` (see :func:`clusternet_aa.flags.parse_feature_gates`)."""
    return flags.parse_feature_gates(text, known)


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    """Delegated authentication and authorization (kube's ``--requestheader-*`` and friends).

    A None list means "not given on the command line": the value then comes from the parent's
    ``kube-system/extension-apiserver-authentication`` ConfigMap, else kube's default.
    """

    #: ``--client-ca-file``: PEM bundle whose certificates authenticate users (CN user, O groups).
    client_ca_file: Path | None = None
    #: ``--requestheader-client-ca-file``: PEM bundle that signs the front proxy's certificate.
    requestheader_client_ca_file: Path | None = None
    #: ``--requestheader-allowed-names``: front-proxy CNs accepted; empty means any.
    requestheader_allowed_names: tuple[str, ...] | None = None
    #: ``--requestheader-username-headers`` (kube default ``X-Remote-User``).
    requestheader_username_headers: tuple[str, ...] | None = None
    #: ``--requestheader-group-headers`` (kube default ``X-Remote-Group``).
    requestheader_group_headers: tuple[str, ...] | None = None
    #: ``--requestheader-extra-headers-prefix`` (kube default ``X-Remote-Extra-``).
    requestheader_extra_headers_prefix: tuple[str, ...] | None = None
    #: ``--requestheader-uid-headers`` (no default in kube).
    requestheader_uid_headers: tuple[str, ...] | None = None
    #: Seconds a successful TokenReview answer is reused.
    token_success_ttl: float = 10.0
    #: Seconds a failed TokenReview answer is reused.
    token_failure_ttl: float = 5.0
    #: Seconds an "allowed" SubjectAccessReview answer is reused.
    authz_allowed_ttl: float = 10.0
    #: Seconds a "denied" SubjectAccessReview answer is reused.
    authz_denied_ttl: float = 5.0
    #: Groups allowed everything without asking the parent (kube: ``system:masters``).
    always_allow_groups: tuple[str, ...] = ("system:masters",)
    #: Namespace of the ConfigMap the parent publishes front-proxy trust in.
    configmap_namespace: str = "kube-system"
    #: Name of that ConfigMap.
    configmap_name: str = "extension-apiserver-authentication"


@dataclass(frozen=True, kw_only=True)
class HubSettings:
    """One hub process."""

    #: ``--bind-address``: the address the HTTPS listener binds to.
    bind_address: str = "0.0.0.0"
    #: ``--secure-port``: the HTTPS port; 0 picks a free one (tests).
    secure_port: int = 443
    #: ``--tls-cert-file``: PEM serving certificate (chain); self-signed in memory when absent.
    tls_cert_file: Path | None = None
    #: ``--tls-private-key-file``: PEM key of the serving certificate.
    tls_private_key_file: Path | None = None
    #: Extra DNS names / IPs for the self-signed certificate (e.g. the Service's DNS name).
    self_signed_names: tuple[str, ...] = ()
    #: ``--kubeconfig``: the parent cluster; in-cluster configuration when None.
    kubeconfig: Path | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)
    #: ``--feature-gates`` after parsing, every known gate present.
    feature_gates: Mapping[str, bool] = field(default_factory=lambda: dict(KNOWN_FEATURE_GATES))
    #: ``--tunnel-wait-seconds``: how long a proxied request waits for a reconnecting agent.
    tunnel_wait_seconds: float = 0.0
    #: ``--tunnel-keepalive-interval``: seconds between keepalive PINGs on each agent tunnel.
    tunnel_keepalive_interval: float = 15.0
    #: ``--tunnel-keepalive-misses``: missed intervals after which a tunnel is declared dead.
    tunnel_keepalive_misses: int = 3
    #: Seconds between readiness going false on SIGTERM and the listener closing, so that
    #: load balancers and the aggregator notice (kube's ``--shutdown-delay-duration``).
    shutdown_delay_seconds: float = 0.0
    #: Seconds in-flight requests (long watches, exec sessions) get to finish after that.
    shutdown_grace_seconds: float = 10.0
    #: ``--http2``: offer HTTP/2 on the listener (ALPN ``h2``), as kube-apiserver does by
    #: default; when false only HTTP/1.1 is offered.
    http2: bool = True

    @property
    def socket_connection(self) -> bool:
        """The ``SocketConnection`` gate: serve tunnels and the proxy (else 503, as Clusternet)."""
        return bool(self.feature_gates.get("SocketConnection", False))

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the flag at fault."""
        if not 0 <= self.secure_port <= 65535:
            raise SettingsError(f"--secure-port {self.secure_port} must be between 0 and 65535")
        if (self.tls_cert_file is None) != (self.tls_private_key_file is None):
            raise SettingsError("--tls-cert-file and --tls-private-key-file go together")
        for flag, path in (
            ("--tls-cert-file", self.tls_cert_file),
            ("--tls-private-key-file", self.tls_private_key_file),
            ("--kubeconfig", self.kubeconfig),
            ("--client-ca-file", self.auth.client_ca_file),
            ("--requestheader-client-ca-file", self.auth.requestheader_client_ca_file),
        ):
            if path is not None and not path.is_file():
                raise SettingsError(f"{flag} {path}: no such file")
        if self.tunnel_wait_seconds < 0:
            raise SettingsError("--tunnel-wait-seconds must not be negative")
        if self.tunnel_keepalive_interval <= 0:
            raise SettingsError("--tunnel-keepalive-interval must be positive")
        if self.tunnel_keepalive_misses < 1:
            raise SettingsError("--tunnel-keepalive-misses must be at least 1")
        unknown = set(self.feature_gates) - set(KNOWN_FEATURE_GATES)
        if unknown:
            raise SettingsError(f"unrecognized feature gate: {', '.join(sorted(unknown))}")
