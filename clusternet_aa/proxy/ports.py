"""What the proxy needs from the rest of the hub, as Protocols.

The proxy does not import the API server (features stay independent); the hub's assembly
(``clusternet_aa.hub``) passes in objects that satisfy these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clusternet_aa.identity import UserInfo

GROUP = "proxies.clusternet.io"
VERSION = "v1alpha1"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


class Authorizer(Protocol):
    async def authorize(
        self,
        user: UserInfo,
        *,
        verb: str,
        resource: str,
        subresource: str = "",
        name: str = "",
    ) -> Decision:
        """May ``user`` do ``verb`` on ``resource[/subresource]`` named ``name`` in the
        proxies.clusternet.io/v1alpha1 group (cluster scoped)?"""
        ...


class ClusterDirectory(Protocol):
    def is_known(self, cluster_id: str) -> bool | None:
        """True when a ManagedCluster with this cluster id exists in the parent, False when
        none does, None when the directory cannot tell yet (not synced)."""
        ...


class ProxyMetrics(Protocol):
    def tunnel_opened(self, cluster_id: str) -> None: ...

    def tunnel_closed(self, cluster_id: str, lifetime_seconds: float) -> None: ...

    def stream_opened(self, kind: str) -> None: ...

    def stream_closed(self, kind: str) -> None: ...

    def bytes_transferred(self, direction: str, count: int) -> None: ...

    def request_finished(self, verb: str, code: int, seconds: float) -> None: ...
