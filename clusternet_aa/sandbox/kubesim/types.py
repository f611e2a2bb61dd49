"""Types shared by kubesim's modules: who is calling, what they ask, and how a request fails.

kubesim is built from small modules (the object store, REST handlers, selectors, patching,
authentication, RBAC, impersonation, OpenAPI, protobuf). They meet only through the types here,
so each can be written and tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A raw Kubernetes object as decoded from JSON.
Obj = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    """An authenticated identity, as kube-apiserver's ``user.Info``."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RequestAttributes:
    """What a request asks to do, as kube-apiserver's ``authorizer.Attributes``.

    For a resource request ``path`` is still set; for a non-resource request (``/healthz``,
    ``/version``) the resource fields are empty and ``is_resource_request`` is false.
    """

    user: UserInfo
    verb: str
    is_resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True)
class Decision:
    """The answer of an authorizer; ``reason`` is shown to the user when access is denied."""

    allowed: bool
    reason: str = ""


class KubesimError(Exception):
    """A request failure that kubesim renders as a ``metav1.Status``.

    ``code`` is the HTTP status and ``reason`` the ``StatusReason`` (``NotFound``,
    ``AlreadyExists``, ``Conflict``, ``Forbidden``, ``Unauthorized``, ``Invalid``, ``Gone``,
    ``BadRequest``, ``MethodNotAllowed``, ``UnsupportedMediaType``, ``RequestEntityTooLarge``...).
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details) if details else None

    def to_status(self) -> Obj:
        """The ``metav1.Status`` body for this error."""
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status


#: Lists stored objects: (api_group, resource, namespace or None for all) -> objects.
#: Authentication and RBAC read Secrets, ServiceAccounts, Roles and bindings through it.
ObjectLister = Callable[[str, str, str | None], Sequence[Obj]]


@dataclass(frozen=True, kw_only=True)
class ResourceInfo:
    """One served REST resource (built-in or from a CRD), as discovery describes it.

    ``schema`` is a CRD version's ``openAPIV3Schema``; for built-ins it is None and the schema is
    found through :func:`clusternet_aa.sandbox.kubesim.schemas.definition_name`.
    """

    group: str
    version: str
    resource: str
    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    schema: Obj | None = None

    @property
    def group_version(self) -> str:
        """``v1`` for the core group, ``<group>/<version>`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"
