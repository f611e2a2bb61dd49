"""How a parent-cluster identity becomes a child-cluster identity.

The child's RBAC decides what a parent user may do there, so the agent calls the child's API
server with its own credentials plus ``Impersonate-*`` headers naming the parent user. The
mapping is the child's policy (the agent applies it, not the hub): by default it drops
``system:masters`` and every other ``system:`` group except ``system:authenticated``, so a parent
admin is not a child admin unless the child's RBAC makes them one.

Clusternet compatibility: a caller whose extras carry ``clusternet-token`` (or
``clusternet-certificate`` plus ``clusternet-privatekey``, base64 PEM) is forwarded with those
child credentials and without impersonation, as upstream Clusternet does.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from clusternet_aa.identity import UserInfo

AUTHENTICATED = "system:authenticated"

#: Extra keys that carry child credentials (Clusternet's names, matched case-insensitively).
TOKEN_EXTRA = "clusternet-token"
CERTIFICATE_EXTRA = "clusternet-certificate"
PRIVATE_KEY_EXTRA = "clusternet-privatekey"
_CREDENTIAL_EXTRAS = frozenset({TOKEN_EXTRA, CERTIFICATE_EXTRA, PRIVATE_KEY_EXTRA})


@dataclass(frozen=True, kw_only=True)
class IdentityPolicy:
    """The child's rules for parent identities."""

    #: Prepended to the user name (e.g. ``parent:``) so parent users cannot collide with local ones.
    user_prefix: str = ""
    #: Prepended to every kept group.
    group_prefix: str = ""
    #: Drop every ``system:`` group except those in ``keep_groups``.
    drop_system_groups: bool = True
    #: Groups always dropped (whether or not they start with ``system:``).
    drop_groups: frozenset[str] = field(default_factory=lambda: frozenset({"system:masters"}))
    #: ``system:`` groups kept despite ``drop_system_groups``.
    keep_groups: frozenset[str] = field(default_factory=lambda: frozenset({AUTHENTICATED}))

    def map(self, user: UserInfo) -> UserInfo:
        groups = tuple(
            group if group == AUTHENTICATED else self.group_prefix + group
            for group in user.groups
            if self._keeps(group)
        )
        extra = {k: v for k, v in user.extra.items() if k.lower() not in _CREDENTIAL_EXTRAS}
        return UserInfo(name=self.user_prefix + user.name, uid=user.uid, groups=groups, extra=extra)

    def _keeps(self, group: str) -> bool:
        if group in self.drop_groups:
            return False
        if group.startswith("system:") and self.drop_system_groups:
            return group in self.keep_groups
        return True


def impersonation_headers(user: UserInfo) -> list[tuple[str, str]]:
    """``Impersonate-*`` headers for ``user``. ``system:authenticated`` is left out: the child
    adds it to every impersonated user itself, and asking for it would need an extra grant."""
    headers = [("Impersonate-User", user.name)]
    if user.uid:
        headers.append(("Impersonate-Uid", user.uid))
    headers.extend(("Impersonate-Group", g) for g in user.groups if g != AUTHENTICATED)
    for key, values in user.extra.items():
        name = "Impersonate-Extra-" + quote(key, safe="")
        headers.extend((name, value) for value in values)
    return headers


@dataclass(frozen=True)
class ChildCredentials:
    """Credentials for the child carried by the caller (Clusternet's extras). Not in the
    repr, so a log line or an error message that prints one carries no secret."""

    token: str | None = field(default=None, repr=False)
    certificate_pem: bytes | None = field(default=None, repr=False)
    private_key_pem: bytes | None = field(default=None, repr=False)


def carried_credentials(user: UserInfo) -> ChildCredentials | None:
    """The child credentials in ``user``'s extras, or None when there are none.

    Raises ValueError when they are present but malformed (bad base64, or a certificate
    without its key), so the caller gets a clear 400 instead of an anonymous request.
    """
    extras = {k.lower(): v for k, v in user.extra.items()}
    token = _first(extras.get(TOKEN_EXTRA))
    cert = _first(extras.get(CERTIFICATE_EXTRA))
    key = _first(extras.get(PRIVATE_KEY_EXTRA))
    if token:
        return ChildCredentials(token=token)
    if cert or key:
        if not (cert and key):
            raise ValueError(f"{CERTIFICATE_EXTRA} and {PRIVATE_KEY_EXTRA} must come together")
        try:
            return ChildCredentials(
                certificate_pem=base64.b64decode(cert, validate=True),
                private_key_pem=base64.b64decode(key, validate=True),
            )
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"malformed {CERTIFICATE_EXTRA}/{PRIVATE_KEY_EXTRA}: {exc}") from None
    return None


def _first(values: Iterable[str] | None) -> str | None:
    for value in values or ():
        if value:
            return value
    return None
