"""Authorization: SubjectAccessReview against kubesim's RBAC, and the decision cache."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from clusternet_aa.apiserver.authz import SubjectAccessReviewer
from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.identity import UserInfo
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.proxy.ports import Decision
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.hub import certs
from tests.hub.conftest import PKI, Caller, grant

SOCKETS = "/apis/proxies.clusternet.io/v1alpha1/sockets"


def count_reviews(sim: KubesimServer) -> list[dict[str, Any]]:
    """Every SubjectAccessReview kubesim receives, recorded as it arrives."""
    seen: list[dict[str, Any]] = []

    async def spy(request: web.Request, info: Any, user: Any) -> None:
        if request.method == "POST" and request.path.endswith("/subjectaccessreviews"):
            seen.append({"user": user.name})
        return None

    sim.interceptors.append(spy)
    return seen


@pytest.fixture
def reviews(sim: KubesimServer) -> list[dict[str, Any]]:
    return count_reviews(sim)


async def test_allowed_and_denied_by_parent_rbac(
    call: Caller, pki: PKI, sim: KubesimServer
) -> None:
    await grant(
        sim,
        "alice-c1",
        [{"kind": "User", "name": "alice"}],
        verbs=("get",),
        resource_names=("c1",),
    )
    alice = certs.issue(pki.client_ca, "alice")
    assert (await call(f"{SOCKETS}/c1/proxy/direct/api", client=alice)).status == 200
    denied = await call(f"{SOCKETS}/c2/proxy/direct/api", client=alice)
    assert denied.status == 403
    assert denied.reason == "Forbidden"
    assert denied.body["message"] == (
        'sockets.proxies.clusternet.io "c2" is forbidden: User "alice" cannot get resource '
        '"sockets/proxy" in API group "proxies.clusternet.io" at the cluster scope'
    )
    # POST is "create", which the role does not grant
    posted = await call(f"{SOCKETS}/c1/proxy/direct/api", client=alice, method="POST")
    assert posted.status == 403


async def test_decisions_are_cached_per_user_and_attributes(
    call: Caller, pki: PKI, sim: KubesimServer, reviews: list[dict[str, Any]]
) -> None:
    await grant(sim, "bob-all", [{"kind": "User", "name": "bob"}], verbs=("get",))
    bob = certs.issue(pki.client_ca, "bob")
    carol = certs.issue(pki.client_ca, "carol")
    for _ in range(3):
        assert (await call(f"{SOCKETS}/c1/proxy/x", client=bob)).status == 200
    assert len(reviews) == 1  # two answers from the cache, counted at the parent
    for _ in range(2):
        assert (await call(f"{SOCKETS}/c1/proxy/x", client=carol)).status == 403
    assert len(reviews) == 2  # denials are cached too, per user
    assert (await call(f"{SOCKETS}/c2/proxy/x", client=bob)).status == 200
    assert len(reviews) == 3  # another name is another question


async def test_cache_expires(sim: KubesimServer, parent_kubeconfig) -> None:
    now = [0.0]
    async with await KubeClient.from_kubeconfig(parent_kubeconfig) as kube:
        reviewer = SubjectAccessReviewer(kube, allowed_ttl=10, denied_ttl=5)
        reviewer.cache._clock = lambda: now[0]
        dave = UserInfo(name="dave", groups=("system:authenticated",))

        async def ask() -> bool:
            decision = await reviewer.authorize(
                dave, verb="get", resource="sockets", subresource="proxy", name="c1"
            )
            return decision.allowed

        assert not await ask()
        await grant(sim, "dave", [{"kind": "User", "name": "dave"}], verbs=("get",))
        now[0] = 4.9
        assert not await ask()  # the denial is still cached
        now[0] = 5.1
        assert await ask()  # asked again after denied_ttl
        assert reviewer.reviews == 2


async def test_system_masters_needs_no_review(
    call: Caller, pki: PKI, reviews: list[dict[str, Any]]
) -> None:
    admin = certs.issue(pki.client_ca, "root", orgs=("system:masters",))
    assert (await call(f"{SOCKETS}/c1/proxy/", client=admin)).status == 200
    assert reviews == []


async def test_review_carries_the_whole_identity(sim: KubesimServer, parent_kubeconfig) -> None:
    """Extras and groups reach the parent: RBAC bound to a group decides."""
    await grant(
        sim,
        "team",
        [{"kind": "Group", "name": "team-x"}],
        verbs=("create",),
        resources=("sockets",),
    )
    async with await KubeClient.from_kubeconfig(parent_kubeconfig) as kube:
        reviewer = SubjectAccessReviewer(kube)

        async def ask(user: UserInfo) -> Decision:
            return await reviewer.authorize(user, verb="create", resource="sockets", name="c9")

        member = UserInfo(name="erin", uid="u1", groups=("team-x",), extra={"k": ("v",)})
        outsider = UserInfo(name="erin", uid="u1", groups=("team-y",))
        assert (await ask(member)).allowed
        assert not (await ask(outsider)).allowed


async def test_unreachable_parent_is_a_500_status_not_a_denial() -> None:
    configuration = client.Configuration(host="https://127.0.0.1:1")
    async with KubeClient(client.ApiClient(configuration)) as kube:
        reviewer = SubjectAccessReviewer(kube)
        with pytest.raises(StatusError) as caught:
            await reviewer.authorize(UserInfo(name="x"), verb="get", resource="sockets", name="c")
    assert caught.value.code == 500
    assert len(reviewer.cache) == 0


async def test_concurrent_misses_share_one_review(sim: KubesimServer, parent_kubeconfig) -> None:
    """A burst of identical questions on a cold cache (agents reconnecting after a hub restart,
    kubectl discovery) costs the parent one SubjectAccessReview, not one per request."""
    async with await KubeClient.from_kubeconfig(parent_kubeconfig) as kube:
        reviewer = SubjectAccessReviewer(kube)
        erin = UserInfo(name="erin", groups=("system:authenticated",))
        decisions = await asyncio.gather(
            *(
                reviewer.authorize(
                    erin, verb="get", resource="sockets", subresource="proxy", name="c1"
                )
                for _ in range(50)
            )
        )
        assert {d.allowed for d in decisions} == {False}
        assert reviewer.reviews == 1


async def test_cache_key_ignores_group_and_extra_order_but_not_content() -> None:
    """The same identity in another order is one question; a different identity is not."""

    class Recording(SubjectAccessReviewer):
        def __init__(self) -> None:
            super().__init__(None, always_allow_groups=("system:masters",))  # type: ignore[arg-type]
            self.asked: list[str] = []

        async def _review(self, key: Any, user: UserInfo, *args: Any) -> Decision:
            self.asked.append(user.name)
            decision = Decision(True)
            self.cache.put(key, decision, 60)
            return decision

    authz = Recording()
    extra = {"a": ("1",), "b": ("2",)}
    same = [
        UserInfo(name="u", groups=("g1", "g2"), extra=extra),
        UserInfo(name="u", groups=("g2", "g1"), extra=dict(reversed(extra.items()))),
    ]
    for user in same:
        assert (await authz.authorize(user, verb="get", resource="sockets", name="c1")).allowed
    assert authz.asked == ["u"]
    different = [
        UserInfo(name="u", groups=("g1",), extra=extra),
        UserInfo(name="u", groups=("g1", "g2")),
        UserInfo(name="u", groups=("g1", "g2"), extra={"a": ("1",)}),
        UserInfo(name="u", groups=()),
    ]
    for user in different:
        await authz.authorize(user, verb="get", resource="sockets", name="c1")
    assert len(authz.asked) == 5
    masters = UserInfo(name="root", groups=("x", "system:masters"))
    assert (await authz.authorize(masters, verb="get", resource="sockets")).allowed
    assert len(authz.asked) == 5  # always allowed, never reviewed
