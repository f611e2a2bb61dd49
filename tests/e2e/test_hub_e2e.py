"""kubectl on a child cluster exactly as if it were local: through the parent's aggregation layer,
the hub process, the tunnel and the agent, with the child's own RBAC deciding (issue 5)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.e2e.fleet import CLUSTER_ID, OTHER_CLUSTER_ID, Fleet, free_port, get_json, running_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

KUBECTLS = [str(Path(__file__).parents[2] / ".venv" / "bin" / "kubectl")]
if shutil.which("kubectl", path="/usr/bin") and os.path.realpath(
    "/usr/bin/kubectl"
) != os.path.realpath(KUBECTLS[0]):
    KUBECTLS.append("/usr/bin/kubectl")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    async with running_fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running


def text(result: object) -> str:
    out = getattr(result, "stdout", b"") + getattr(result, "stderr", b"")
    return out.decode(errors="replace")


async def test_get_and_list_as_the_parent_user(fleet: Fleet) -> None:
    result = await fleet.kubectl("alice-token", "get", "pods")
    assert result.returncode == 0, text(result)
    assert re.search(rb"demo\s+1/1\s+Running", result.stdout), text(result)


async def test_childs_rbac_allows_and_denies(fleet: Fleet) -> None:
    denied = await fleet.kubectl("alice-token", "get", "secrets")
    assert denied.returncode == 1
    assert b'secrets is forbidden: User "alice" cannot list resource "secrets"' in denied.stderr
    can = await fleet.kubectl(
        "alice-token", "auth", "can-i", "create", "pods", "--subresource=exec"
    )
    assert can.stdout.strip() == b"yes", text(can)
    cannot = await fleet.kubectl("alice-token", "auth", "can-i", "delete", "pods")
    assert cannot.stdout.strip() == b"no", text(cannot)


async def test_parent_system_masters_is_not_child_admin(fleet: Fleet) -> None:
    result = await fleet.kubectl("root-token", "get", "nodes")
    assert result.returncode == 1
    assert b'User "root" cannot list resource "nodes"' in result.stderr


async def test_callers_impersonation_never_reaches_the_child(fleet: Fleet) -> None:
    # The parent refuses alice's --as (she may not impersonate there).
    refused = await fleet.kubectl("alice-token", "--as", "admin", "get", "nodes")
    assert refused.returncode == 1
    # Forged front-proxy headers sent to the parent are dropped there and again by the hub: the
    # child sees the real caller.
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(
            session,
            fleet.proxy_server() + "/api/v1/nodes",
            headers={
                "Authorization": "Bearer alice-token",
                "X-Remote-User": "admin",
                "X-Remote-Group": "system:masters",
            },
            ssl=fleet.parent_ssl(),
        )
    assert status == 403
    assert 'User "alice"' in body["message"]


async def test_apply_patch_watch_delete(fleet: Fleet) -> None:
    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e2e, namespace: default}\ndata: {k: v1}\n"
    applied = await fleet.kubectl("admin-token", "apply", "-f", "-", stdin=manifest)
    assert applied.returncode == 0, text(applied)
    watch = await asyncio.create_subprocess_exec(
        *_kubectl_argv(fleet, "admin-token", "get", "configmap", "e2e", "-w", "-o", "jsonpath={.data.k}{\"\\n\"}"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert watch.stdout is not None
    first = await asyncio.wait_for(watch.stdout.readline(), 20)
    assert first.strip() == b"v1"
    patched = await fleet.kubectl(
        "admin-token", "patch", "configmap", "e2e", "-p", '{"data":{"k":"v2"}}'
    )
    assert patched.returncode == 0, text(patched)
    second = await asyncio.wait_for(watch.stdout.readline(), 20)
    assert second.strip() == b"v2"
    watch.terminate()
    await watch.wait()
    deleted = await fleet.kubectl("admin-token", "delete", "configmap", "e2e")
    assert deleted.returncode == 0, text(deleted)
    gone = await fleet.kubectl("admin-token", "get", "configmap", "e2e")
    assert gone.returncode == 1
    assert b"NotFound" in gone.stderr


def _kubectl_argv(fleet: Fleet, token: str, *args: str, kubectl: str = KUBECTLS[0]) -> list[str]:
    return [kubectl, "--kubeconfig", str(fleet.kubeconfig(token)), *args]


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_logs_follow_streams_lines_as_they_come(fleet: Fleet, kubectl: str) -> None:
    follow = await asyncio.create_subprocess_exec(
        *_kubectl_argv(fleet, "alice-token", "logs", "-f", "demo", "--tail", "1", kubectl=kubectl),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert follow.stdout is not None
    lines = [await asyncio.wait_for(follow.stdout.readline(), 10) for _ in range(4)]
    follow.terminate()
    await follow.wait()
    ticks = [int(line.split()[1]) for line in lines]
    assert ticks == sorted(ticks)
    assert ticks[-1] - ticks[0] == 3


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_exec_exit_code_stdin_and_stderr(fleet: Fleet, kubectl: str) -> None:
    failed = await fleet.kubectl(
        "alice-token",
        "exec",
        "demo",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        kubectl=kubectl,
    )
    assert failed.returncode == 3, text(failed)
    assert failed.stdout == b"out\n"
    assert b"err\n" in failed.stderr
    payload = os.urandom(1024 * 1024)
    counted = await fleet.kubectl(
        "alice-token", "exec", "-i", "demo", "--", "wc", "-c", stdin=payload, kubectl=kubectl
    )
    assert counted.returncode == 0, text(counted)
    assert counted.stdout.strip() == str(len(payload)).encode()


async def test_exec_with_a_tty(fleet: Fleet) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("util-linux script is needed to give kubectl a terminal")
    command = " ".join(
        _kubectl_argv(
            fleet, "alice-token", "exec", "-it", "demo", "--", "sh", "-c", "tty; stty size"
        )
    )
    result = await asyncio.create_subprocess_exec(
        script, "-qec", command, "/dev/null", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(result.communicate(b""), 30)
    assert result.returncode == 0, (out + err).decode(errors="replace")
    assert b"/dev/pts/" in out


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_cp_both_ways(
    fleet: Fleet, tmp_path: Path, kubectl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    monkeypatch.chdir(tmp_path)
    up = await fleet.kubectl(
        "alice-token", "cp", "big.bin", "demo:big.bin", timeout=120, kubectl=kubectl
    )
    assert up.returncode == 0, text(up)
    down = await fleet.kubectl(
        "alice-token", "cp", "demo:big.bin", "back.bin", timeout=120, kubectl=kubectl
    )
    assert down.returncode == 0, text(down)
    assert (
        hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest()
        == hashlib.sha256(source.read_bytes()).digest()
    )


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_port_forward_reaches_the_pods_port(fleet: Fleet, kubectl: str) -> None:
    local = free_port()
    forward = await asyncio.create_subprocess_exec(
        *_kubectl_argv(fleet, "alice-token", "port-forward", "pod/demo", f"{local}:8080", kubectl=kubectl),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        ready = await asyncio.wait_for(forward.stdout.readline(), 20)
        assert b"Forwarding from" in ready
        async with aiohttp.ClientSession() as session:
            body = os.urandom(256 * 1024)
            async with session.post(f"http://127.0.0.1:{local}/", data=body) as response:
                reply = await response.text()
        assert reply == f"hello from child-1 ({len(body)} bytes received)\n"
    finally:
        forward.terminate()
        await forward.wait()


async def test_x_remote_user_without_the_front_proxy_cert_is_not_trusted(fleet: Fleet) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we only probe the hub; its identity is not the point
    url = f"https://127.0.0.1:{fleet.hub_port}/apis/proxies.clusternet.io/v1alpha1/sockets/{CLUSTER_ID}/proxy/direct/api/v1/namespaces/default/pods"
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(
            session,
            url,
            headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"},
            ssl=context,
        )
    assert status == 401
    assert body["reason"] == "Unauthorized"


async def test_an_agent_cannot_open_another_clusters_tunnel(fleet: Fleet) -> None:
    from clusternet_aa.agent.tunnel_client import tunnel_url
    from clusternet_aa.tunnel.websocket import HandshakeError, connect

    async with aiohttp.ClientSession() as session:
        for token, cluster in (
            ("agent-token", OTHER_CLUSTER_ID),
            ("agent2-token", CLUSTER_ID),
            ("alice-token", CLUSTER_ID),
        ):
            with pytest.raises(HandshakeError) as info:
                await connect(
                    session,
                    tunnel_url(fleet.parent.url, cluster),
                    ssl_context=fleet.parent_ssl(),
                    headers={"Authorization": f"Bearer {token}"},
                )
            assert info.value.status == 403, (token, cluster)
    assert fleet.agent.connected.is_set()
    still = await fleet.kubectl("alice-token", "get", "pods")
    assert still.returncode == 0, text(still)


async def test_dial_target_outside_the_policy_is_refused(fleet: Fleet) -> None:
    url = (
        fleet.proxy_server().replace("/proxy/direct", f"/proxy/http/127.0.0.1:{fleet.http_port}")
        + "/"
    )
    async with aiohttp.ClientSession() as session:
        status, body = await get_json(
            session, url, headers={"Authorization": "Bearer admin-token"}, ssl=fleet.parent_ssl()
        )
    assert status == 403
    assert "refuses this target" in body["message"]


async def test_agent_not_connected_is_a_503_naming_the_cluster(fleet: Fleet) -> None:
    async with aiohttp.ClientSession() as session:
        url = fleet.proxy_server(OTHER_CLUSTER_ID) + "/api"
        status, body = await get_json(
            session, url, headers={"Authorization": "Bearer alice-token"}, ssl=fleet.parent_ssl()
        )
    assert status == 503
    assert OTHER_CLUSTER_ID in body["message"]


async def test_hub_metrics_count_tunnels_and_requests(fleet: Fleet) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{fleet.hub_port}/metrics", ssl=context) as response,
    ):
        assert response.status == 200
        metrics = await response.text()
    assert re.search(r"^clusternet_socket_connections_count(\{[^}]*\})? 1(\.0)?$", metrics, re.M), (
        metrics[:2000]
    )
    assert "clusternet_proxy" in metrics or "proxied" in metrics


@pytest.mark.parametrize("kubectl", KUBECTLS)
async def test_spdy_fallback_error_passes_through_unchanged(fleet: Fleet, kubectl: str) -> None:
    """kubectl's SPDY path (forced off websockets) reaches the child byte for byte; the child
    refuses SPDY with a 400 Status, which kubectl must print as the child wrote it."""
    result = await fleet.kubectl(
        "alice-token", "exec", "demo", "--", "true",
        env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}, kubectl=kubectl,
    )  # fmt: skip
    assert result.returncode == 1
    assert b"kubesim serves pods/exec over WebSocket only" in result.stderr, text(result)
