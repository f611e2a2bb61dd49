"""API aggregation through real TLS: kubesim as the front proxy, a stub as the extension server.

The stub authenticates the front proxy the way the hub must (kube's ``x509`` request-header
authenticator): a client certificate chained to the request-header CA from the
``extension-apiserver-authentication`` ConfigMap, with clientAuth usage and a CN in the allowed
names; only then are the ``X-Remote-*`` headers trusted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import ssl
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from yarl import URL

from clusternet_aa.sandbox.kubesim import pki
from clusternet_aa.sandbox.kubesim.aggregation_proxy import header_key_escape
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.kubesim.conftest import Raw

GROUP = "stub.example.io"
VERSION = "v1"
SERVICE = "stub-api"
NAMESPACE = "kube-system"
RESOURCES = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": f"{GROUP}/{VERSION}",
    "resources": [
        {
            "name": "things",
            "singularName": "thing",
            "namespaced": True,
            "kind": "Thing",
            "verbs": ["get", "list", "watch", "create"],
            "shortNames": ["th"],
        },
        {
            "name": "things/exec",
            "singularName": "",
            "namespaced": True,
            "kind": "Thing",
            "verbs": ["get"],
        },
    ],
}


# -- the extension server stub ---------------------------------------------------------------


@dataclass
class Seen:
    """What the stub's authenticator concluded for one request, and the raw request."""

    authenticated: bool
    user: str = ""
    uid: str = ""
    groups: list[str] = field(default_factory=list)
    extra: dict[str, list[str]] = field(default_factory=dict)
    headers: list[tuple[str, str]] = field(default_factory=list)
    path_qs: str = ""
    body: bytes = b""

    def header_names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


@dataclass
class AuthConfig:
    """The request-header settings, read from the ConfigMap as an extension server does."""

    ca_pem: str
    allowed_names: list[str]
    username_headers: list[str]
    group_headers: list[str]
    extra_prefixes: list[str]
    uid_headers: list[str]

    @classmethod
    def from_configmap(cls, data: dict[str, str]) -> AuthConfig:
        return cls(
            ca_pem=data["requestheader-client-ca-file"],
            allowed_names=json.loads(data["requestheader-allowed-names"]),
            username_headers=json.loads(data["requestheader-username-headers"]),
            group_headers=json.loads(data["requestheader-group-headers"]),
            extra_prefixes=json.loads(data["requestheader-extra-headers-prefix"]),
            uid_headers=json.loads(data.get("requestheader-uid-headers", "[]")),
        )


def authenticate(config: AuthConfig, peer_der: bytes | None, request: web.BaseRequest) -> Seen:
    """kube's request-header authenticator; the TLS layer already verified the chain."""
    headers = list(request.headers.items())
    if peer_der is None:
        return Seen(authenticated=False, headers=headers)
    cert = x509.load_der_x509_certificate(peer_der)
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return Seen(authenticated=False, headers=headers)
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return Seen(authenticated=False, headers=headers)
    common_names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if config.allowed_names and not (common_names and common_names[0] in config.allowed_names):
        return Seen(authenticated=False, headers=headers)
    user = next((request.headers[h] for h in config.username_headers if request.headers.get(h)), "")
    if not user:
        return Seen(authenticated=False, headers=headers)
    groups = [v for h in config.group_headers for v in request.headers.getall(h, [])]
    uid = next((request.headers[h] for h in config.uid_headers if request.headers.get(h)), "")
    extra: dict[str, list[str]] = {}
    for name, value in headers:
        for prefix in config.extra_prefixes:
            if name.lower().startswith(prefix.lower()):
                key = urllib.parse.unquote(name[len(prefix) :].lower())
                extra.setdefault(key, []).append(value)
    return Seen(True, user, uid, groups, extra, headers)


class Stub:
    """An HTTPS extension server for ``stub.example.io/v1``."""

    def __init__(self, auth: AuthConfig, serving: pki.KeyPair, serving_ca: pki.KeyPair) -> None:
        self.auth = auth
        self.serving = serving
        self.serving_ca = serving_ca
        self.seen: list[Seen] = []
        self.release = asyncio.Event()
        self.ws_closed_with: list[int | None] = []
        self.watches: list[web.Request] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "c").write_bytes(self.serving.cert_pem)
            Path(tmp, "k").write_bytes(self.serving.key_pem)
            context.load_cert_chain(Path(tmp, "c"), Path(tmp, "k"))
        context.load_verify_locations(cadata=self.auth.ca_pem)
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", port, ssl_context=self.ssl_context(), reuse_address=True
        )
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = authenticate(self.auth, der, request)
        seen.path_qs = request.raw_path
        seen.body = await request.read()
        self.seen.append(seen)
        if not seen.authenticated:
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "Unauthorized",
                    "code": 401,
                },
                status=401,
            )
        path = request.path
        base = f"/apis/{GROUP}/{VERSION}"
        if path == base:
            return web.json_response(RESOURCES)
        if path == f"{base}/whoami":
            return web.json_response(
                {"user": seen.user, "uid": seen.uid, "groups": seen.groups, "extra": seen.extra}
            )
        if path == f"{base}/echo":
            response = web.Response(body=seen.body, status=200)
            response.headers["Content-Type"] = request.headers.get("Content-Type", "")
            response.headers["X-Seen-Accept"] = request.headers.get("Accept", "")
            response.headers["X-Seen-Query"] = request.query_string
            return response
        if path == f"{base}/redirect":
            raise web.HTTPFound(f"{base}/whoami")
        if path == f"{base}/namespaces/default/things" and request.query.get("die"):
            dying = web.StreamResponse()
            await dying.prepare(request)
            await dying.write(b'{"type":"ADDED"}\n')
            assert request.transport is not None
            request.transport.abort()
            return dying
        if path == f"{base}/namespaces/default/things" and request.query.get("watch"):
            return await self._watch(request)
        if path.endswith("/things/open/exec"):
            return await self._websocket(request)
        if path.endswith("/things/locked/exec"):
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "no exec for you",
                    "reason": "Forbidden",
                    "code": 403,
                },
                status=403,
            )
        if path.endswith("/things/plain/exec"):
            return web.Response(text="not an upgrade")
        if path == f"{base}/namespaces/default/things":
            return web.json_response(
                {
                    "kind": "ThingList",
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "metadata": {},
                    "items": [],
                }
            )
        return web.json_response({"kind": "Status", "code": 404}, status=404)

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        self.watches.append(request)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)

        def event(name: str) -> bytes:
            thing = {"kind": "Thing", "metadata": {"name": name}}
            return json.dumps({"type": "ADDED", "object": thing}).encode() + b"\n"

        await response.write(event("a"))
        # The second event is only sent after the client saw the first one through kubesim.
        await self.release.wait()
        await response.write(event("b"))
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                if message.data == b"\x00bye":
                    await ws.send_bytes(b"\x01done")
                    await ws.close(code=1000, message=b"finished")
                    break
                await ws.send_bytes(b"\x01" + message.data[1:].upper())
        self.ws_closed_with.append(ws.close_code)
        return ws


def serving_pair() -> tuple[pki.KeyPair, pki.KeyPair]:
    ca = pki.make_ca("stub-ca")
    return ca, pki.issue_server_cert(ca, (f"{SERVICE}.{NAMESPACE}.svc", "127.0.0.1"))


async def auth_config(raw: Raw) -> AuthConfig:
    reply = await raw.get(
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    )
    assert reply.status == 200
    return AuthConfig.from_configmap(reply.body["data"])


@contextlib.asynccontextmanager
async def running_stub(raw: Raw) -> AsyncIterator[Stub]:
    ca, serving = serving_pair()
    stub = Stub(await auth_config(raw), serving, ca)
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


async def register(
    raw: Raw,
    port: int,
    ca_pem: bytes | None,
    *,
    priority: int = 1000,
    insecure: bool = False,
) -> None:
    """Service + Endpoints + APIService, as an extension server's manifests would create."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
    }
    assert (await raw.post(f"/api/v1/namespaces/{NAMESPACE}/services", service)).status == 201
    await set_endpoints(raw, port)
    spec: dict[str, Any] = {
        "group": GROUP,
        "version": VERSION,
        "service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443},
        "groupPriorityMinimum": priority,
        "versionPriority": 15,
    }
    if ca_pem is not None:
        spec["caBundle"] = base64.b64encode(ca_pem).decode()
    if insecure:
        spec["insecureSkipTLSVerify"] = True
    apiservice = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{VERSION}.{GROUP}"},
        "spec": spec,
    }
    reply = await raw.post("/apis/apiregistration.k8s.io/v1/apiservices", apiservice)
    assert reply.status == 201, reply.body


async def set_endpoints(raw: Raw, port: int) -> None:
    endpoints: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "subsets": [
            {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port}]}
        ],
    }
    path = f"/api/v1/namespaces/{NAMESPACE}/endpoints"
    current = await raw.get(f"{path}/{SERVICE}")
    if current.status == 404:
        assert (await raw.post(path, endpoints)).status == 201
    else:
        endpoints["metadata"]["resourceVersion"] = current.body["metadata"]["resourceVersion"]
        assert (await raw.put(f"{path}/{SERVICE}", endpoints)).status == 200


@pytest.fixture
async def stub(sim: KubesimServer, raw: Raw) -> AsyncIterator[Stub]:
    async with running_stub(raw) as running:
        await register(raw, running.port, running.serving_ca.cert_pem)
        await sim.aggregation.wait_available(f"{VERSION}.{GROUP}")
        yield running


BASE = f"/apis/{GROUP}/{VERSION}"
AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"


# -- the ConfigMap and the PKI ------------------------------------------------------------------


async def test_authentication_configmap_as_in_a_real_cluster(sim: KubesimServer, raw: Raw) -> None:
    reply = await raw.get(
        "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    )
    data = reply.body["data"]
    assert data["client-ca-file"] == sim.pki.client_ca.cert_pem.decode()
    assert data["requestheader-client-ca-file"] == sim.pki.front_proxy_ca.cert_pem.decode()
    assert data["requestheader-allowed-names"] == '["front-proxy-client"]'
    assert data["requestheader-username-headers"] == '["X-Remote-User"]'
    assert data["requestheader-group-headers"] == '["X-Remote-Group"]'
    assert data["requestheader-extra-headers-prefix"] == '["X-Remote-Extra-"]'
    assert data["requestheader-uid-headers"] == '["X-Remote-Uid"]'
    # The request-header CA is its own CA: user client certs never pass as the front proxy.
    assert sim.pki.front_proxy_ca.cert_pem != sim.pki.client_ca.cert_pem
    client = sim.pki.front_proxy_client.cert
    assert (
        client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "front-proxy-client"
    )
    usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.issuer == sim.pki.front_proxy_ca.cert.subject
    state = sim.config.state_dir
    assert state is not None
    assert (state / "front-proxy-ca.crt").read_bytes() == sim.pki.front_proxy_ca.cert_pem
    assert (state / "front-proxy-client.crt").read_bytes() == sim.pki.front_proxy_client.cert_pem
    assert (state / "front-proxy-client.key").stat().st_mode & 0o777 == 0o600
    # An extension server's service account reads it through the bootstrap Role.
    role = await raw.get(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/extension-apiserver-authentication-reader"
    )
    assert role.status == 200
    assert role.body["rules"][0]["resourceNames"] == ["extension-apiserver-authentication"]
    delegator = await raw.get(
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:auth-delegator"
    )
    assert delegator.status == 200


async def test_local_apiservices_for_served_groups(raw: Raw) -> None:
    listing = await raw.get("/apis/apiregistration.k8s.io/v1/apiservices")
    by_name = {i["metadata"]["name"]: i for i in listing.body["items"]}
    assert {"v1.", "v1.apps", "v1.apiregistration.k8s.io"} <= set(by_name)
    apps = by_name["v1.apps"]
    assert "service" not in apps["spec"]
    assert apps["spec"]["groupPriorityMinimum"] == 17800
    [condition] = apps["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "Available",
        "True",
        "Local",
    )
    assert by_name["v1."]["spec"] == {
        "version": "v1",
        "groupPriorityMinimum": 18000,
        "versionPriority": 1,
    }


# -- identity ----------------------------------------------------------------------------------


async def test_stub_sees_verified_identity_and_no_credentials(
    sim: KubesimServer, raw: Raw, stub: Stub
) -> None:
    reply = await raw.get(
        f"{BASE}/whoami",
        headers={
            "X-Remote-User": "mallory",
            "X-Remote-Group": "system:masters",
            "X-Remote-Extra-Scopes": "all",
            "X-Remote-Uid": "forged",
        },
    )
    assert reply.status == 200, reply.body
    assert reply.body["user"] == "admin"
    assert reply.body["groups"] == ["system:masters", "system:authenticated"]
    assert reply.body["extra"] == {}
    seen = stub.seen[-1]
    names = seen.header_names()
    assert "authorization" not in names
    assert [v for k, v in seen.headers if k.lower() == "x-remote-user"] == ["admin"]
    assert "x-remote-extra-scopes" not in names
    assert not any(v == "forged" for _, v in seen.headers)


async def test_impersonated_identity_with_extras(sim: KubesimServer, raw: Raw, stub: Stub) -> None:
    reply = await raw.get(
        f"{BASE}/whoami",
        headers={
            "Impersonate-User": "alice",
            "Impersonate-Uid": "alice-uid",
            "Impersonate-Group": "system:masters",
            "Impersonate-Extra-acme.com%2Fproject": "p1",
            "Impersonate-Extra-scopes": "read",
        },
    )
    assert reply.status == 200, reply.body
    assert reply.body["user"] == "alice"
    assert reply.body["uid"] == "alice-uid"
    assert reply.body["groups"] == ["system:masters", "system:authenticated"]
    assert reply.body["extra"] == {"acme.com/project": ["p1"], "scopes": ["read"]}
    names = stub.seen[-1].header_names()
    assert not any(n.startswith("impersonate-") for n in names)
    assert "authorization" not in names
    # client-go's escaping, byte for byte.
    assert "x-remote-extra-acme.com%2fproject" in names


async def test_rbac_applies_before_proxying(sim: KubesimServer, raw: Raw, stub: Stub) -> None:
    before = len(stub.seen)
    reply = await raw.get(f"{BASE}/namespaces/default/things", headers={"Impersonate-User": "bob"})
    assert reply.status == 403
    assert reply.body["reason"] == "Forbidden"
    assert len(stub.seen) == before


def test_header_key_escape_matches_client_go() -> None:
    assert header_key_escape("acme.com/project") == "acme.com%2Fproject"
    assert header_key_escape("100%") == "100%25"
    assert header_key_escape("a b") == "a%20b"
    assert header_key_escape("ünï") == "%C3%BCn%C3%AF"
    assert header_key_escape("key_with-OK.chars~") == "key_with-OK.chars~"


def _cert(issuer: pki.KeyPair, common_name: str, usage: x509.ObjectIdentifier) -> pki.KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    ca_key = serialization.load_pem_private_key(issuer.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return pki.KeyPair(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def _direct(stub: Stub, client: pki.KeyPair | None) -> tuple[int, Any] | str:
    """Talk to the stub directly with ``client`` and forged X-Remote headers."""
    context = ssl.create_default_context(cadata=stub.serving_ca.cert_pem.decode())
    if client is not None:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "c").write_bytes(client.cert_pem)
            Path(tmp, "k").write_bytes(client.key_pem)
            context.load_cert_chain(Path(tmp, "c"), Path(tmp, "k"))
    connector = aiohttp.TCPConnector(ssl=context)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(
                f"https://127.0.0.1:{stub.port}{BASE}/whoami",
                headers={"X-Remote-User": "mallory", "X-Remote-Group": "system:masters"},
            ) as response:
                return response.status, await response.json()
        except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
            return f"refused: {e!r}"


async def test_stub_refuses_forged_front_proxies(sim: KubesimServer, raw: Raw, stub: Stub) -> None:
    front_proxy_ca = sim.pki.front_proxy_ca
    other_ca = pki.make_ca("other-ca")
    cases = {
        "no certificate": None,
        "wrong CA": _cert(other_ca, "front-proxy-client", ExtendedKeyUsageOID.CLIENT_AUTH),
        "user client CA": sim.pki.issue_client_cert("front-proxy-client"),
        "CN not allowed": _cert(front_proxy_ca, "someone-else", ExtendedKeyUsageOID.CLIENT_AUTH),
        "no clientAuth": _cert(
            front_proxy_ca, "front-proxy-client", ExtendedKeyUsageOID.SERVER_AUTH
        ),
    }
    for label, client in cases.items():
        outcome = await _direct(stub, client)
        assert isinstance(outcome, str) or outcome[0] == 401, (label, outcome)
    # The genuine front-proxy certificate does authenticate (so the checks above can fail).
    genuine = await _direct(stub, sim.pki.front_proxy_client)
    assert genuine == (
        200,
        {"user": "mallory", "uid": "", "groups": ["system:masters"], "extra": {}},
    )


# -- availability ------------------------------------------------------------------------------


async def _condition(raw: Raw) -> dict[str, Any]:
    reply = await raw.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{VERSION}.{GROUP}")
    conditions = reply.body.get("status", {}).get("conditions", [])
    return next(c for c in conditions if c["type"] == "Available")


async def test_unavailable_then_recovers(sim: KubesimServer, raw: Raw, stub: Stub) -> None:
    condition = await _condition(raw)
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "True",
        "Passed",
        "all checks passed",
    )
    closed = _free_port()
    await set_endpoints(raw, closed)
    await sim.aggregation.wait_available(f"{VERSION}.{GROUP}", "False")
    condition = await _condition(raw)
    assert condition["reason"] == "FailedDiscoveryCheck"
    assert f"https://127.0.0.1:{closed}/apis/{GROUP}/{VERSION}" in condition["message"]
    assert "connection refused" in condition["message"]
    reply = await raw.get(f"{BASE}/namespaces/default/things")
    assert reply.status == 503
    assert reply.body == "service unavailable\n"
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    # Legacy discovery still lists the group (as kube does); kubectl then warns about it.
    apis = await raw.get("/apis")
    assert GROUP in [g["name"] for g in apis.body["groups"]]
    # Aggregated discovery keeps the version, without resources (kube's discovery manager).
    v2 = await raw.get("/apis", headers={"Accept": AGGREGATED})
    [group] = [i for i in v2.body["items"] if i["metadata"]["name"] == GROUP]
    assert group["versions"] == [{"version": VERSION, "freshness": "Current"}]
    await set_endpoints(raw, stub.port)
    await sim.aggregation.wait_available(f"{VERSION}.{GROUP}")
    reply = await raw.get(f"{BASE}/namespaces/default/things")
    assert reply.status == 200
    assert reply.body["kind"] == "ThingList"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_periodic_probe_notices_a_dead_server(tmp_path: Path) -> None:
    config = KubesimConfig(apiservice_resync_seconds=0.1, apiservice_probe_timeout=1.0)
    async with running_kubesim(config) as sim:
        connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
        async with aiohttp.ClientSession(connector=connector) as session:
            raw = Raw(session, sim)
            async with running_stub(raw) as stub:
                await register(raw, stub.port, stub.serving_ca.cert_pem)
                await _eventually(raw, "True")
                port = stub.port
            # No store change: only the resync can find out the server is gone.
            await _eventually(raw, "False")
            async with running_stub(raw) as again:
                await again.stop()
                await again.start(port)
                await _eventually(raw, "True")


async def _eventually(raw: Raw, status: str) -> None:
    async with asyncio.timeout(5):
        while True:
            reply = await raw.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{VERSION}.{GROUP}")
            conditions = reply.body.get("status", {}).get("conditions", [])
            if any(c["type"] == "Available" and c["status"] == status for c in conditions):
                return
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("setup", "reason", "message"),
    [
        ("no-service", "ServiceNotFound", 'service/stub-api in "kube-system" is not present'),
        (
            "wrong-port",
            "ServicePortError",
            'service/stub-api in "kube-system" is not listening on port 443',
        ),
        (
            "no-endpoints",
            "EndpointsNotFound",
            'cannot find endpointslices for service/stub-api in "kube-system"',
        ),
        (
            "unnamed-port",
            "MissingEndpoints",
            'endpointslices for service/stub-api in "kube-system" have no addresses '
            'with port name "https"',
        ),
    ],
)
async def test_condition_reasons(
    sim: KubesimServer, raw: Raw, setup: str, reason: str, message: str
) -> None:
    ports: list[dict[str, Any]] = [
        {"name": "https", "port": 8443 if setup == "wrong-port" else 443}
    ]
    if setup != "no-service":
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"ports": ports},
        }
        assert (await raw.post(f"/api/v1/namespaces/{NAMESPACE}/services", service)).status == 201
    if setup == "unnamed-port":
        endpoints = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "subsets": [
                {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "other", "port": 1}]}
            ],
        }
        assert (
            await raw.post(f"/api/v1/namespaces/{NAMESPACE}/endpoints", endpoints)
        ).status == 201
    apiservice = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{VERSION}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "version": VERSION,
            "service": {"namespace": NAMESPACE, "name": SERVICE, "port": 443},
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "insecureSkipTLSVerify": True,
        },
    }
    assert (await raw.post("/apis/apiregistration.k8s.io/v1/apiservices", apiservice)).status == 201
    obj = await sim.aggregation.wait_available(f"{VERSION}.{GROUP}", "False")
    [condition] = obj["status"]["conditions"]
    assert (condition["reason"], condition["message"]) == (reason, message)
    reply = await raw.get(f"{BASE}/whoami")
    assert (reply.status, reply.body) == (503, "service unavailable\n")


async def test_ca_bundle_is_verified(sim: KubesimServer, raw: Raw) -> None:
    async with running_stub(raw) as stub:
        await register(raw, stub.port, pki.make_ca("not-the-stub-ca").cert_pem)
        # The probe does not verify (kube's neither), so the APIService is Available...
        await sim.aggregation.wait_available(f"{VERSION}.{GROUP}")
        # ...but the proxy does, and refuses to talk to an unverified server.
        reply = await raw.get(f"{BASE}/whoami")
        assert reply.status == 503
        assert "x509: certificate signed by unknown authority" in reply.body
        assert not any(s.path_qs.endswith("/whoami") for s in stub.seen)


async def test_insecure_skip_tls_verify(sim: KubesimServer, raw: Raw) -> None:
    async with running_stub(raw) as stub:
        await register(raw, stub.port, None, insecure=True)
        await sim.aggregation.wait_available(f"{VERSION}.{GROUP}")
        reply = await raw.get(f"{BASE}/whoami")
        assert reply.status == 200
        assert reply.body["user"] == "admin"


# -- discovery ---------------------------------------------------------------------------------


async def test_legacy_discovery(raw: Raw, stub: Stub) -> None:
    apis = await raw.get("/apis")
    names = [g["name"] for g in apis.body["groups"]]
    assert names[0] == "apiregistration.k8s.io"
    assert names.index("apps") < names.index("rbac.authorization.k8s.io") < names.index(GROUP)
    entry = apis.body["groups"][names.index(GROUP)]
    assert entry["preferredVersion"] == {"groupVersion": f"{GROUP}/{VERSION}", "version": VERSION}
    group = await raw.get(f"/apis/{GROUP}")
    assert group.body == {"kind": "APIGroup", "apiVersion": "v1", **entry}
    resources = await raw.get(BASE)
    assert resources.body == RESOURCES


async def test_group_priority_orders_discovery(sim: KubesimServer, raw: Raw) -> None:
    async with running_stub(raw) as stub:
        await register(raw, stub.port, stub.serving_ca.cert_pem, priority=20000)
        await sim.aggregation.wait_available(f"{VERSION}.{GROUP}")
        names = [g["name"] for g in (await raw.get("/apis")).body["groups"]]
        assert names[:2] == ["apiregistration.k8s.io", GROUP]


async def test_aggregated_discovery(raw: Raw, stub: Stub) -> None:
    reply = await raw.get("/apis", headers={"Accept": AGGREGATED})
    assert reply.headers["Content-Type"].startswith("application/json;g=apidiscovery.k8s.io;v=v2")
    items = {i["metadata"]["name"]: i for i in reply.body["items"]}
    [version] = items[GROUP]["versions"]
    assert version["version"] == VERSION
    assert version["freshness"] == "Current"
    [things] = version["resources"]
    assert things["resource"] == "things"
    assert things["scope"] == "Namespaced"
    assert things["responseKind"] == {"group": GROUP, "version": VERSION, "kind": "Thing"}
    assert things["shortNames"] == ["th"]
    assert [s["subresource"] for s in things["subresources"]] == ["exec"]
    assert "apps" in items


# -- proxying ----------------------------------------------------------------------------------


async def test_bodies_headers_and_query_pass_unchanged(raw: Raw, stub: Stub) -> None:
    payload = bytes(range(256)) * 64
    path_qs = f"{BASE}/echo?labelSelector=a%3Db&limit=5&x=%2F"
    async with raw.session.post(
        URL(raw.server.url + path_qs, encoded=True),
        data=payload,
        headers={
            "Authorization": f"Bearer {raw.server.admin_token}",
            "Content-Type": "application/vnd.kubernetes.protobuf",
            "Accept": "application/vnd.kubernetes.protobuf, application/json",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
        },
    ) as reply:
        assert reply.status == 200
        assert await reply.read() == payload
        assert reply.headers["Content-Type"] == "application/vnd.kubernetes.protobuf"
        assert reply.headers["X-Seen-Accept"] == (
            "application/vnd.kubernetes.protobuf, application/json"
        )
    seen = stub.seen[-1]
    assert seen.body == payload
    assert seen.path_qs == path_qs
    assert "x-hop" not in seen.header_names()
    assert [v for k, v in seen.headers if k.lower() == "x-forwarded-for"] == ["127.0.0.1"]


async def test_redirects_are_not_followed_or_passed(raw: Raw, stub: Stub) -> None:
    before = len(stub.seen)
    reply = await raw.get(f"{BASE}/redirect")
    assert reply.status == 502
    assert reply.body == "the backend attempted to redirect this request, which is not permitted"
    assert "Location" not in reply.headers
    assert len(stub.seen) == before + 1


async def test_watch_streams_event_by_event(sim: KubesimServer, stub: Stub) -> None:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"{sim.url}{BASE}/namespaces/default/things?watch=1",
            headers={"Authorization": f"Bearer {sim.admin_token}"},
        ) as response,
    ):
        assert response.status == 200
        async with asyncio.timeout(5):
            first = json.loads(await response.content.readline())
        assert first["object"]["metadata"]["name"] == "a"
        stub.release.set()
        async with asyncio.timeout(5):
            second = json.loads(await response.content.readline())
        assert second["object"]["metadata"]["name"] == "b"
        assert await response.content.read() == b""


async def test_client_going_away_closes_the_backend_stream(sim: KubesimServer, stub: Stub) -> None:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        response = await session.get(
            f"{sim.url}{BASE}/namespaces/default/things?watch=1",
            headers={"Authorization": f"Bearer {sim.admin_token}"},
        )
        assert json.loads(await response.content.readline())["type"] == "ADDED"
        [watch] = stub.watches
        assert watch.transport is not None
        assert not watch.transport.is_closing()
        response.close()
    async with asyncio.timeout(5):
        while not _closed(watch):
            await asyncio.sleep(0.01)


def _closed(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def test_backend_death_is_not_a_clean_end(sim: KubesimServer, stub: Stub) -> None:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"{sim.url}{BASE}/namespaces/default/things?watch=1&die=1",
            headers={"Authorization": f"Bearer {sim.admin_token}"},
        ) as response,
    ):
        assert response.status == 200
        assert await response.content.readline() == b'{"type":"ADDED"}\n'
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.content.read()


async def test_websocket_upgrade_relayed_with_close_code(sim: KubesimServer, stub: Stub) -> None:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(
            f"{sim.url}{BASE}/namespaces/default/things/open/exec?command=sh",
            protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            headers={"Authorization": f"Bearer {sim.admin_token}"},
        ) as ws,
    ):
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00hello")
        message = await ws.receive(timeout=5)
        assert message.data == b"\x01HELLO"
        await ws.send_bytes(b"\x00bye")
        assert (await ws.receive(timeout=5)).data == b"\x01done"
        closing = await ws.receive(timeout=5)
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == 1000
        assert closing.extra == "finished"
    async with asyncio.timeout(5):
        while not stub.ws_closed_with:
            await asyncio.sleep(0.01)
    assert stub.ws_closed_with == [1000]


async def test_refused_upgrade_passes_status_and_body(sim: KubesimServer, stub: Stub) -> None:
    connector = aiohttp.TCPConnector(ssl=sim.pki.client_ssl_context())
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                f"{sim.url}{BASE}/namespaces/default/things/locked/exec",
                protocols=("v5.channel.k8s.io",),
                headers={"Authorization": f"Bearer {sim.admin_token}"},
            )
        assert refused.value.status == 403
        headers = {
            "Authorization": f"Bearer {sim.admin_token}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        }
        async with session.get(
            f"{sim.url}{BASE}/namespaces/default/things/locked/exec", headers=headers
        ) as response:
            assert response.status == 403
            body = json.loads(await response.read())
            assert body["message"] == "no exec for you"
        async with session.get(
            f"{sim.url}{BASE}/namespaces/default/things/plain/exec", headers=headers
        ) as response:
            assert response.status == 503
            assert await response.text() == "invalid upgrade response: status code 200\n"


def test_config_defaults_are_kube_timings() -> None:
    config = KubesimConfig()
    assert (config.apiservice_resync_seconds, config.apiservice_probe_timeout) == (30.0, 5.0)
    assert replace(config, apiservice_resync_seconds=1).apiservice_resync_seconds == 1
