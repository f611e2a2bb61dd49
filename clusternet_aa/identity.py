"""Who a request is from, as it crosses from the parent cluster to a child.

The hub authenticates the parent's user (front-proxy headers, client certificate or bearer token)
into a :class:`UserInfo`; the tunnel carries it to the agent as OPEN metadata; the agent maps it
into the child (impersonation) under the child's own policy. One type, used on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

#: Key of the identity in a tunnel stream's OPEN metadata.
METADATA_KEY = "identity"


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    """An authenticated user, as Kubernetes' ``user.Info``. Extra keys are lower case."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        """The msgpack-friendly form carried in OPEN metadata."""
        # Runs on every proxied request; most users have no extra (no comprehension then).
        extra = self.extra
        return {
            "user": self.name,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {key: list(values) for key, values in extra.items()} if extra else {},
        }

    @classmethod
    def from_metadata(cls, value: Any) -> UserInfo:
        """Parse OPEN metadata; ValueError when it is not a well-formed identity."""
        if not isinstance(value, Mapping):
            raise ValueError("identity must be a map")
        name, uid = value.get("user"), value.get("uid", "")
        groups, extra = value.get("groups", []), value.get("extra", {})
        if not isinstance(name, str) or not name or not isinstance(uid, str):
            raise ValueError("identity needs a non-empty string user and a string uid")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ValueError("identity groups must be a list of strings")
        if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(i, str) for i in v)
            for k, v in extra.items()
        ):
            raise ValueError("identity extra must map strings to lists of strings")
        return cls(
            name=name,
            uid=uid,
            groups=tuple(groups),
            extra={k.lower(): tuple(v) for k, v in extra.items()},
        )


#: Where the hub's authentication middleware leaves the caller's UserInfo on an aiohttp request.
REQUEST_USER_KEY = web.RequestKey("clusternet.user", UserInfo)
