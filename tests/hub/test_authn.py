"""Authentication over real TLS: front proxy, client certificates, bearer tokens, anonymous."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID
from multidict import CIMultiDict

from clusternet_aa.apiserver.authn import user_from_headers
from clusternet_aa.apiserver.trust import TrustFlags, build_snapshot
from clusternet_aa.hub.server import HubServer
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.hub import certs
from tests.hub.conftest import PKI, Caller, grant

PROXY = "/apis/proxies.clusternet.io/v1alpha1/sockets/c1/proxy/direct/api"
FRONT_HEADERS = [
    ("X-Remote-User", "alice"),
    ("X-Remote-Group", "devs"),
    ("X-Remote-Group", "ops"),
    ("X-Remote-Extra-Clusternet-Token", "child-token"),
    ("X-Remote-Extra-Acme.com%2Fproject", "p1"),
    ("X-Remote-Extra-Acme.com%2Fproject", "p2"),
]


@pytest.fixture(autouse=True)
async def everyone_may_proxy(sim: KubesimServer) -> None:
    """Clusternet's ``clusternet:system:socketsproxy`` binding, to isolate authentication."""
    await grant(sim, "socketsproxy", [{"kind": "Group", "name": "system:authenticated"}])


async def test_front_proxy_identity_is_taken_from_headers(call: Caller, pki: PKI) -> None:
    reply = await call(PROXY, client=pki.front_client, headers=FRONT_HEADERS)
    assert reply.status == 200, reply.text
    user = reply.body["user"]
    assert user["user"] == "alice"
    assert user["groups"] == ["devs", "ops", "system:authenticated"]
    # keys lower-cased, then percent-decoded; values in order (kube's headerrequest)
    assert user["extra"] == {"clusternet-token": ["child-token"], "acme.com/project": ["p1", "p2"]}
    # the identity headers never reach the handler (nothing can forward them by mistake)
    seen = {name.lower() for name, _ in reply.body["headers"]}
    assert not {n for n in seen if n.startswith("x-remote-")}
    assert "authorization" not in seen


async def test_uid_header_only_when_configured(start_hub, pki: PKI, parent_kubeconfig) -> None:
    from tests.hub.conftest import flag_settings

    server = await start_hub(
        flag_settings(pki, parent_kubeconfig, requestheader_uid_headers=("X-Remote-Uid",))
    )
    reply = await Caller(server)(
        PROXY, client=pki.front_client, headers=[*FRONT_HEADERS, ("X-Remote-Uid", "u-1")]
    )
    assert reply.body["user"]["uid"] == "u-1"


async def _refused(call: Caller, client: certs.Pair | None) -> None:
    """Either the handshake refuses the certificate or the headers are ignored: 401 Status."""
    try:
        reply = await call(PROXY, client=client, headers=FRONT_HEADERS)
    except (aiohttp.ClientConnectionError, ssl.SSLError):
        return
    assert reply.status == 401, reply.text
    assert reply.body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


async def test_headers_without_client_certificate_are_not_trusted(call: Caller) -> None:
    await _refused(call, None)


async def test_certificate_from_another_ca_is_refused(call: Caller) -> None:
    other = certs.make_ca("attacker-ca")
    await _refused(call, certs.issue(other, "front-proxy-client"))


async def test_cn_outside_allowed_names_is_refused(call: Caller, pki: PKI) -> None:
    reply = await call(
        PROXY, client=certs.issue(pki.front_ca, "someone-else"), headers=FRONT_HEADERS
    )
    assert reply.status == 401


async def test_certificate_without_client_auth_usage_is_refused(call: Caller, pki: PKI) -> None:
    server_only = certs.issue(
        pki.front_ca, "front-proxy-client", usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    await _refused(call, server_only)


async def test_expired_certificate_is_refused(call: Caller, pki: PKI) -> None:
    await _refused(call, certs.issue(pki.front_ca, "front-proxy-client", expired=True))


def test_python_check_refuses_what_the_handshake_might_let_through(pki: PKI) -> None:
    """The per-CA check in Python, independent of OpenSSL's union store."""
    snapshot = build_snapshot(
        TrustFlags(
            requestheader_ca_pem=pki.front_ca.cert_pem,
            client_ca_pem=pki.client_ca.cert_pem,
            allowed_names=("front-proxy-client",),
        ),
        None,
    )
    assert snapshot.verify_front_proxy(pki.front_client.cert) is None
    user_cert = certs.issue(pki.client_ca, "front-proxy-client").cert
    assert snapshot.verify_front_proxy(user_cert) is not None  # right CN, wrong CA
    assert snapshot.verify_client(user_cert) is None
    for bad in (
        certs.issue(pki.front_ca, "front-proxy-client", expired=True),
        certs.issue(pki.front_ca, "front-proxy-client", usage=ExtendedKeyUsageOID.SERVER_AUTH),
        certs.issue(pki.front_ca, "front-proxy-client", usage=None),
        certs.issue(pki.front_ca, "intruder"),
    ):
        assert snapshot.verify_front_proxy(bad.cert) is not None
    anyone = build_snapshot(TrustFlags(requestheader_ca_pem=pki.front_ca.cert_pem), None)
    assert anyone.verify_front_proxy(certs.issue(pki.front_ca, "intruder").cert) is None


async def test_user_certificate_with_headers_is_its_own_user(call: Caller, pki: PKI) -> None:
    """A client-CA user cannot assert another identity with X-Remote-User."""
    mallory = certs.issue(pki.client_ca, "mallory", orgs=("team-a", "team-b"))
    reply = await call(PROXY, client=mallory, headers=FRONT_HEADERS)
    assert reply.status == 200, reply.text
    assert reply.body["user"]["user"] == "mallory"
    assert reply.body["user"]["groups"] == ["team-a", "team-b", "system:authenticated"]
    assert reply.body["user"]["extra"] == {}


async def test_front_proxy_certificate_without_user_header_falls_through(
    call: Caller, pki: PKI
) -> None:
    reply = await call(PROXY, client=pki.front_client, headers=[("X-Remote-Group", "x")])
    assert reply.status == 401


async def _service_account_token(sim: KubesimServer, name: str) -> str:
    from clusternet_aa.kube.client import KubeClient
    from clusternet_aa.sandbox.kubesim.testing import api_client

    async with api_client(sim) as api:
        kube = KubeClient(api)
        await kube.request(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            body={"metadata": {"name": name}},
        )
        answer = await kube.request(
            "POST",
            f"/api/v1/namespaces/default/serviceaccounts/{name}/token",
            body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
        )
    return str(answer["status"]["token"])


async def test_bearer_token_is_reviewed_by_the_parent(
    call: Caller, hub: HubServer, sim: KubesimServer
) -> None:
    token = await _service_account_token(sim, "reader")
    reply = await call(PROXY, token=token)
    assert reply.status == 200, reply.text
    user = reply.body["user"]
    assert user["user"] == "system:serviceaccount:default:reader"
    assert "system:serviceaccounts:default" in user["groups"]
    assert "system:authenticated" in user["groups"]
    assert all(name.lower() != "authorization" for name, _ in reply.body["headers"])
    reviews = hub.hub.tokens.reviews
    assert (await call(PROXY, token=token)).status == 200
    assert hub.hub.tokens.reviews == reviews  # answered from the cache


async def test_bad_token_is_401_even_on_public_paths(call: Caller) -> None:
    for path in (PROXY, "/healthz", "/apis"):
        reply = await call(path, token="not-a-token")
        assert reply.status == 401, path
        assert reply.reason == "Unauthorized"


async def test_anonymous_public_paths_and_nothing_else(call: Caller) -> None:
    for path in ("/healthz", "/livez", "/readyz", "/version", "/metrics", "/openapi/v2",
                 "/openapi/v3", "/apis", "/apis/proxies.clusternet.io",
                 "/apis/proxies.clusternet.io/v1alpha1"):  # fmt: skip
        assert (await call(path)).status == 200, path
    for path in (PROXY, "/apis/proxies.clusternet.io/v1alpha1/sockets/c1", "/nope", "/api"):
        reply = await call(path)
        assert reply.status == 401, path
        assert reply.body["kind"] == "Status"


def test_extra_header_decoding_matches_kube() -> None:
    snapshot = build_snapshot(
        TrustFlags(
            username_headers=("X-Empty-User", "X-Remote-User"),
            extra_prefixes=("X-Remote-Extra-", "X-Other-"),
        ),
        None,
    )
    headers = CIMultiDict(
        [
            ("X-Empty-User", ""),  # the first configured header *with a value* names the user
            ("X-Remote-User", "bob"),
            ("x-remote-extra-Scopes", "a"),
            ("X-Other-Scopes", "b"),
            ("X-Remote-Extra-bad%zz", "dropped"),
            ("X-Remote-Extra-%41b", "c"),
        ]
    )
    user = user_from_headers(headers, snapshot)
    assert user is not None
    assert user.name == "bob"
    # lower-cased *before* unescaping, so an escaped capital survives; bad escapes are dropped
    assert user.extra == {"scopes": ("a", "b"), "Ab": ("c",)}
    assert user_from_headers(CIMultiDict([("X-Remote-Group", "g")]), snapshot) is None


@pytest.mark.parametrize("header", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   "])
async def test_non_bearer_authorization_is_no_credential(call: Caller, header: str) -> None:
    assert (await call("/healthz", headers={"Authorization": header})).status == 200
    assert (await call(PROXY, headers={"Authorization": header})).status == 401


def test_extra_prefixes_with_different_initials_are_all_found() -> None:
    # The extras scan skips a header by its first character: every prefix's must count, in
    # either case, and an empty prefix (any header is an extra) turns the shortcut off.
    snapshot = build_snapshot(TrustFlags(extra_prefixes=("X-Remote-Extra-", "Acme-")), None)
    assert snapshot.extra_prefix_initials == frozenset({"x", "a"})
    headers = CIMultiDict(
        [
            ("X-Remote-User", "bob"),
            ("acme-Team", "t1"),
            ("ACME-Zone", "z1"),
            ("Accept", "application/json"),
            ("X-REMOTE-EXTRA-Scopes", "s"),
            ("Other-Team", "not an extra"),
        ]
    )
    user = user_from_headers(headers, snapshot)
    assert user is not None
    assert user.extra == {"team": ("t1",), "zone": ("z1",), "scopes": ("s",)}
    everything = build_snapshot(TrustFlags(extra_prefixes=("",)), None)
    assert everything.extra_prefix_initials is None
    user = user_from_headers(CIMultiDict([("X-Remote-User", "bob"), ("Team", "t")]), everything)
    assert user is not None
    assert user.extra == {"x-remote-user": ("bob",), "team": ("t",)}
