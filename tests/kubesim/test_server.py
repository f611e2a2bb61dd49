"""Server lifecycle: several instances, plain HTTP, the standalone process, token Secrets."""

from __future__ import annotations

import asyncio
import base64
import signal
import sys
from pathlib import Path

import aiohttp

from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from tests.kubesim.conftest import VENV_KUBECTL, Raw, configmap


async def test_two_instances_are_independent() -> None:
    config = KubesimConfig(nodes=0, http_port=0)
    async with running_kubesim(config) as one, running_kubesim(config) as two:
        assert one.port != two.port
        assert one.ca_pem != two.ca_pem
        one.service.create(
            one.registry.lookup("", "v1", "configmaps"),  # type: ignore[arg-type]
            configmap("only-in-one"),
        )
        assert two.store.get(("", "configmaps"), "default", "only-in-one") is None
        assert one.http_url is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{one.http_url}/api/v1/namespaces/default/configmaps/only-in-one",
                headers={"Authorization": f"Bearer {one.admin_token}"},
            ) as reply,
        ):
            assert reply.status == 200
        # The other instance's token means nothing here.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{one.http_url}/api/v1/namespaces",
                headers={"Authorization": f"Bearer {two.admin_token}"},
            ) as reply,
        ):
            assert reply.status == 401


async def test_service_account_token_secret_is_filled(raw: Raw, sim: KubesimServer) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "default-token",
            "annotations": {"kubernetes.io/service-account.name": "default"},
        },
    }
    assert (await raw.post("/api/v1/namespaces/default/secrets", secret)).status == 201
    await sim.settle()
    filled = (await raw.get("/api/v1/namespaces/default/secrets/default-token")).body
    assert set(filled["data"]) >= {"token", "ca.crt", "namespace"}
    assert base64.b64decode(filled["data"]["ca.crt"]) == sim.ca_pem
    token = base64.b64decode(filled["data"]["token"]).decode()
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    answer = (await raw.post("/apis/authentication.k8s.io/v1/tokenreviews", review)).body
    assert answer["status"]["authenticated"] is True
    assert answer["status"]["user"]["username"] == "system:serviceaccount:default:default"
    as_sa = await raw.get("/api/v1/namespaces/default/configmaps", token=token)
    assert as_sa.status == 403


async def test_standalone_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clusternet_aa.sandbox.kubesim",
        "--port",
        "0",
        "--state-dir",
        str(state),
        "--git-version",
        "v1.31.4",
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        async with asyncio.timeout(30):
            line = await process.stderr.readline()
        assert b"kubesim serving https://127.0.0.1:" in line
        assert (state / "admin.kubeconfig").exists()
        assert (state / "ca.crt").exists()
        kubectl = await asyncio.create_subprocess_exec(
            str(VENV_KUBECTL),
            "--kubeconfig",
            str(state / "admin-cert.kubeconfig"),
            "version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={"HOME": str(tmp_path)},
        )
        out, _ = await kubectl.communicate()
        assert b"Server Version: v1.31.4" in out
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await process.wait()
    assert code == 0
