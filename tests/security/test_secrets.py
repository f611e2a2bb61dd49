"""Tokens and keys never appear in logs or error bodies.

Flows that handle every kind of secret run with hub and agent logging at DEBUG: parent bearer
tokens (good, bad, unauthorized), the agent's parent token on the tunnel, the agent's child
ServiceAccount token, Clusternet credential extras (a child token, a client certificate and its
private key, and malformed ones), a dead child, a tunnel that drops. Every log record and every
response body is searched for each secret.
"""

from __future__ import annotations

import base64
import logging

import aiohttp
import pytest

from clusternet_aa.agent.registration import Credentials
from clusternet_aa.identity import UserInfo
from clusternet_aa.proxy.identity_mapping import ChildCredentials
from tests.proxy.conftest import CLUSTER_ID, PARENT_USERS, ProxyWorld


async def test_no_secret_in_logs_or_status_bodies(
    world: ProxyWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    child_token = world.child.admin_token
    pair = world.child.pki.issue_client_cert("cert-admin", ["system:masters"])
    key_b64 = base64.b64encode(pair.key_pem).decode()
    users = {
        "compat-token-secret": UserInfo(
            name="clusternet", extra={"clusternet-token": (child_token,)}
        ),
        "compat-cert-secret": UserInfo(
            name="clusternet",
            extra={
                "clusternet-certificate": (base64.b64encode(pair.cert_pem).decode(),),
                "clusternet-privatekey": (key_b64,),
            },
        ),
        "compat-half-secret": UserInfo(
            name="clusternet", extra={"clusternet-privatekey": (key_b64,)}
        ),
        "compat-bad-secret": UserInfo(
            name="clusternet",
            extra={
                "clusternet-certificate": ("!!notbase64" + key_b64,),
                "clusternet-privatekey": ("%%" + key_b64,),
            },
        ),
        "denied-secret": UserInfo(name="denied"),
    }
    for token, user in users.items():
        monkeypatch.setitem(PARENT_USERS, token, user)
    world.authorizer.rules.add(("clusternet", "*", "sockets/proxy", "*"))
    secrets = [
        "alice-token",
        "agent-token",
        "child-agent-token",
        child_token,
        key_b64,
        pair.key_pem.decode().splitlines()[1],
        *users,
    ]
    bodies: list[str] = []

    async def call(token: str, path: str, cluster: str = CLUSTER_ID, **headers: str) -> None:
        async with (
            aiohttp.ClientSession() as client,
            client.get(
                world.proxy_url(cluster) + path,
                headers={"Authorization": f"Bearer {token}", **headers},
                ssl=world.client_ssl,
            ) as response,
        ):
            bodies.append(f"{response.status} {dict(response.headers)} {await response.text()}")

    await call("alice-token", "/api")  # no tunnel yet: 503
    await world.connect_agent()
    await call("alice-token", "/api/v1/namespaces/default/pods")
    await call("alice-token", "/api/v1/namespaces/kube-system/secrets")  # child's 403
    await call("wrong-secret-token", "/api")  # 401
    await call("denied-secret", "/api")  # hub's 403
    await call("alice-token", "/api", cluster="deadbeef-0000-4000-8000-00000000dead")  # 404
    await call("alice-token", "/%2e%2e/api")  # 400
    for token in (
        "compat-token-secret",
        "compat-cert-secret",
        "compat-half-secret",
        "compat-bad-secret",
    ):
        await call(token, "/api/v1/namespaces/kube-system/secrets")
        await call(
            token,
            "/api/v1/namespaces/default/pods/x/exec",
            Connection="Upgrade",
            Upgrade="SPDY/3.1",
        )
    await call(
        "alice-token",
        "/api",
        **{"Impersonate-User": "x", "X-Remote-Extra-Clusternet-Token": child_token},
    )
    # The tunnel drops with a request in flight.
    for session in world.agent_sessions:
        await session.close(grace=0.1)
    await call("alice-token", "/api")
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    )
    assert len(caplog.records) > 5
    assert any("500" not in body for body in bodies)
    for secret in secrets:
        assert secret not in logged, f"{secret[:12]}... appears in the logs"
        for body in bodies:
            assert secret not in body, f"{secret[:12]}... appears in an error body: {body[:300]}"


def test_credential_objects_do_not_print_their_secrets() -> None:
    credentials = Credentials(parent_url="https://p", token="bootstrap-abcdef.0123456789abcdef")
    assert "0123456789abcdef" not in repr(credentials)
    assert "0123456789abcdef" not in str(credentials)
    carried = ChildCredentials(token="child-secret", private_key_pem=b"-----BEGIN KEY-----xyz")
    assert "child-secret" not in repr(carried)
    assert "xyz" not in repr(carried)
