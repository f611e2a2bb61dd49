"""May this user do that: SubjectAccessReview against the parent, with a short decision cache.

The hub owns no policy; the parent's RBAC decides (kube's delegated authorization). Decisions are
cached briefly per (user, attributes), allowed answers longer than denied ones so that a freshly
granted permission takes effect quickly. Members of ``system:masters`` are allowed without a
review, as the generic apiserver's ``--authorization-always-allow-groups`` default: the
aggregator's availability probe and cluster admins never depend on the parent's reviews.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from clusternet_aa.apiserver.caching import SingleFlight, TTLCache
from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.identity import UserInfo
from clusternet_aa.kube import errors as kube_errors
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.proxy.ports import GROUP, VERSION, Decision

logger = logging.getLogger(__name__)

_Key = tuple[str, str, tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], str, str, str, str]

#: kube maps HTTP methods to verbs like this for connect (proxy) requests.
METHOD_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "OPTIONS": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def verb_for_method(method: str) -> str:
    """The RBAC verb of a proxied call (kube: connect requests use the method's verb)."""
    return METHOD_VERBS.get(method.upper(), method.lower())


class SubjectAccessReviewer:
    """Implements ``proxy.ports.Authorizer`` with the parent's SubjectAccessReview API."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        allowed_ttl: float = 10.0,
        denied_ttl: float = 5.0,
        cache_size: int = 4096,
        always_allow_groups: Iterable[str] = ("system:masters",),
    ) -> None:
        self.kube = kube
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self.always_allow_groups = frozenset(always_allow_groups)
        self.cache: TTLCache[_Key, Decision] = TTLCache(cache_size)
        self._inflight: SingleFlight[_Key, Decision] = SingleFlight()
        #: SubjectAccessReviews sent to the parent (cache misses).
        self.reviews = 0

    async def authorize(
        self,
        user: UserInfo,
        *,
        verb: str,
        resource: str,
        subresource: str = "",
        name: str = "",
    ) -> Decision:
        """The parent's decision on ``verb`` of ``resource[/subresource]`` named ``name``.

        Raises a 500 :class:`StatusError` when the parent cannot be asked (kube answers an
        authorization error with InternalError); such failures are not cached.
        """
        groups = user.groups
        if not self.always_allow_groups.isdisjoint(groups):
            return Decision(True, "member of an always-allowed group")
        # The key is built on every request: no sorting where there is nothing to sort.
        key: _Key = (
            user.name,
            user.uid,
            tuple(groups) if len(groups) < 2 else tuple(sorted(groups)),
            tuple(sorted((k, tuple(v)) for k, v in user.extra.items())) if user.extra else (),
            verb,
            resource,
            subresource,
            name,
        )
        hit, cached = self.cache.get(key)
        if hit and cached is not None:
            return cached
        return await self._inflight.do(
            key, lambda: self._review(key, user, verb, resource, subresource, name)
        )

    async def _review(
        self, key: _Key, user: UserInfo, verb: str, resource: str, subresource: str, name: str
    ) -> Decision:
        spec: dict[str, object] = {
            "user": user.name,
            "groups": list(user.groups),
            "resourceAttributes": {
                "verb": verb,
                "group": GROUP,
                "version": VERSION,
                "resource": resource,
                "subresource": subresource,
                "name": name,
            },
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        self.reviews += 1
        try:
            answer = await self.kube.request(
                "POST",
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                body=body,
                request_timeout=10.0,
            )
        except kube_errors.KubeError as exc:
            logger.warning("SubjectAccessReview against the parent failed: %s", exc)
            raise StatusError(500, f"Internal error occurred: authorization: {exc}") from exc
        status = answer.get("status") or {}
        decision = Decision(
            allowed=status.get("allowed") is True and status.get("denied") is not True,
            reason=str(status.get("reason") or status.get("evaluationError") or ""),
        )
        self.cache.put(key, decision, self.allowed_ttl if decision.allowed else self.denied_ttl)
        return decision


def forbidden_message(
    user: UserInfo, *, verb: str, resource: str, subresource: str = "", name: str = ""
) -> str:
    """kube's wording: ``User "x" cannot get resource "sockets/proxy" in API group ...``."""
    target = f"{resource}/{subresource}" if subresource else resource
    return (
        f'{resource}.{GROUP} "{name}" is forbidden: User "{user.name}" cannot {verb} '
        f'resource "{target}" in API group "{GROUP}" at the cluster scope'
    )
