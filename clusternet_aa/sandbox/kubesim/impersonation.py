"""Impersonation: the ``Impersonate-*`` headers, checked exactly as kube-apiserver's filter does.

Each requested item (the user or ServiceAccount, every group, every extra value, the uid) is a
separate authorization of the verb ``impersonate`` for the *requester*; the first refusal is a
403 worded as kube words it. Groups, extras or a uid without a user is a 400. The new identity
gets ``system:authenticated`` (``system:unauthenticated`` for ``system:anonymous``) unless the
groups already say, and a ServiceAccount without explicit groups gets its ServiceAccount groups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from clusternet_aa.sandbox.kubesim.types import Decision, KubesimError, RequestAttributes, UserInfo

USER_HEADER = "impersonate-user"
GROUP_HEADER = "impersonate-group"
UID_HEADER = "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"

_ALL_AUTHENTICATED = "system:authenticated"
_ALL_UNAUTHENTICATED = "system:unauthenticated"
_ANONYMOUS = "system:anonymous"
_SA_PREFIX = "system:serviceaccount:"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

Authorize = Callable[[RequestAttributes], Decision]


@dataclass(frozen=True)
class _Request:
    """One thing to impersonate, as kube's ``v1.ObjectReference`` of the filter."""

    kind: str  # ServiceAccount, User, Group, UserExtra or UID
    name: str
    namespace: str = ""
    api_version: str = ""
    field_path: str = ""

    def go_string(self) -> str:
        """Go's ``%v`` of the ObjectReference, which kube puts into its 400 message."""
        fields = (self.kind, self.namespace, self.name, "", self.api_version, "", self.field_path)
        return "{" + " ".join(fields) + "}"


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of ``system:serviceaccount:<ns>:<name>``, as kube's SplitUsername."""
    if not username.startswith(_SA_PREFIX):
        return None
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    namespace, name = parts
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        return None
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return None
    return namespace, name


def has_impersonation(headers: Sequence[tuple[str, str]]) -> bool:
    """Whether any ``Impersonate-*`` header is present (the server strips them after use)."""
    return any(name.lower().startswith("impersonate-") for name, _ in headers)


def _unescape_extra_key(encoded: str) -> str:
    """kube lower-cases the key, then ``url.PathUnescape``s it, keeping it as is if malformed."""
    if re.search(r"%(?![0-9a-fA-F]{2})", encoded):
        return encoded
    try:
        return unquote(encoded, errors="strict")
    except UnicodeDecodeError:
        return encoded


def _requests(headers: Sequence[tuple[str, str]]) -> list[_Request]:
    """kube's ``buildImpersonationRequests``: user, groups, extras, uid, in that order."""
    users = [value for name, value in headers if name.lower() == USER_HEADER]
    requested_user = users[0] if users else ""
    requests: list[_Request] = []
    if requested_user:
        service_account = split_service_account(requested_user)
        if service_account is not None:
            namespace, name = service_account
            requests.append(_Request("ServiceAccount", name, namespace=namespace))
        else:
            requests.append(_Request("User", requested_user))
    groups = [value for name, value in headers if name.lower() == GROUP_HEADER]
    requests.extend(_Request("Group", group) for group in groups)
    extras = False
    for name, value in headers:
        lowered = name.lower()
        if lowered.startswith(EXTRA_PREFIX):
            extras = True
            key = _unescape_extra_key(lowered[len(EXTRA_PREFIX) :])
            requests.append(
                _Request("UserExtra", value, api_version="authentication.k8s.io/v1", field_path=key)
            )
    uids = [value for name, value in headers if name.lower() == UID_HEADER]
    if uids and uids[0]:
        requests.append(_Request("UID", uids[0], api_version="authentication.k8s.io/v1"))
    if (groups or extras or (uids and uids[0])) and not requested_user:
        described = " ".join(r.go_string() for r in requests)
        raise KubesimError(
            400, "BadRequest", f"requested [{described}] without impersonating a user"
        )
    return requests


def _attributes(requester: UserInfo, request: _Request) -> RequestAttributes:
    group, _, version = request.api_version.rpartition("/")
    resource, subresource = {
        "ServiceAccount": ("serviceaccounts", ""),
        "User": ("users", ""),
        "Group": ("groups", ""),
        "UserExtra": ("userextras", request.field_path),
        "UID": ("uids", ""),
    }[request.kind]
    return RequestAttributes(
        user=requester,
        verb="impersonate",
        is_resource_request=True,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=request.namespace,
        name=request.name,
    )


def forbidden(attrs: RequestAttributes, reason: str) -> KubesimError:
    """kube's ``responsewriters.Forbidden`` for a refused request, message and details alike."""
    if not attrs.is_resource_request:
        message = f'User "{attrs.user.name}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = attrs.resource
        if attrs.subresource:
            resource = f"{resource}/{attrs.subresource}"
        where = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        message = (
            f'User "{attrs.user.name}" cannot {attrs.verb} resource "{resource}" '
            f'in API group "{attrs.api_group}" {where}'
        )
    if reason:
        message = f"{message}: {reason}"
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    if not attrs.resource and not attrs.api_group:
        full = f"forbidden: {message}"
    elif not attrs.name:
        full = f"{qualified} is forbidden: {message}"
    else:
        full = f'{qualified} "{attrs.name}" is forbidden: {message}'
    details: dict[str, str] = {}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    if attrs.resource:
        details["kind"] = attrs.resource
    return KubesimError(403, "Forbidden", full, details=details)


def impersonate(
    requester: UserInfo, headers: Sequence[tuple[str, str]], authorize: Authorize
) -> UserInfo:
    """The identity a request acts as: ``requester`` itself when no ``Impersonate-*`` header.

    ``headers`` are the request's (name, value) pairs, names in any case, repeated headers kept.
    Raises KubesimError 400 (groups/extra/uid without a user) or 403 (an item not allowed).
    """
    requests = _requests(headers)
    if not requests:
        return requester
    groups_specified = any(name.lower() == GROUP_HEADER for name, _ in headers)
    username = ""
    uid = ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for request in requests:
        attrs = _attributes(requester, request)
        if request.kind == "ServiceAccount":
            username = f"{_SA_PREFIX}{request.namespace}:{request.name}"
            if not groups_specified:
                groups = ["system:serviceaccounts", f"system:serviceaccounts:{request.namespace}"]
        elif request.kind == "User":
            username = request.name
        elif request.kind == "Group":
            groups.append(request.name)
        elif request.kind == "UserExtra":
            extra.setdefault(request.field_path, []).append(request.name)
        else:
            uid = request.name
        decision = authorize(attrs)
        if not decision.allowed:
            raise forbidden(attrs, decision.reason)
    if username != _ANONYMOUS:
        if _ALL_AUTHENTICATED not in groups and _ALL_UNAUTHENTICATED not in groups:
            groups.append(_ALL_AUTHENTICATED)
    elif _ALL_UNAUTHENTICATED not in groups:
        groups.append(_ALL_UNAUTHENTICATED)
    return UserInfo(
        name=username,
        uid=uid,
        groups=tuple(groups),
        extra={key: tuple(values) for key, values in extra.items()},
    )
