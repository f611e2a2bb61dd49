"""exec and attach over the WebSocket channel protocols, pod status, and process lifetimes."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusternet_aa.sandbox.kubesim.pods import PodRuntimeConfig
from clusternet_aa.sandbox.kubesim.server import KubesimConfig, KubesimServer
from clusternet_aa.sandbox.kubesim.testing import running_kubesim
from clusternet_aa.sandbox.kubesim.types import UserInfo
from tests.kubesim.podtools import PodClient, alive, eventually, pod, pod_client, pod_sim

SLEEPER = {"name": "c", "image": "busybox", "command": ["sleep", "300"]}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[KubesimServer]:
    async with pod_sim(tmp_path) as sim:
        yield sim


@pytest.fixture
async def client(server: KubesimServer) -> AsyncIterator[PodClient]:
    async with pod_client(server) as c:
        yield c


async def test_running_pod_status(client: PodClient) -> None:
    spec = dict(SLEEPER, ports=[{"containerPort": 8080, "protocol": "TCP"}])
    await client.create(pod("p", spec))
    obj = await client.get("p")
    assert obj["spec"]["nodeName"] == "kubesim-node-1"
    assert obj["spec"]["containers"][0]["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    status = obj["status"]
    assert status["phase"] == "Running"
    assert status["podIP"] == "127.0.0.1"
    assert status["podIPs"] == [{"ip": "127.0.0.1"}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == "True"
    assert conditions["ContainersReady"] == "True"
    assert conditions["PodScheduled"] == "True"
    [container] = status["containerStatuses"]
    assert container["name"] == "c"
    assert container["ready"] is True
    assert container["started"] is True
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", container["state"]["running"]["startedAt"]
    )
    assert container["containerID"].startswith("containerd://")


async def test_pods_without_runtime_stay_pending(tmp_path: Path) -> None:
    async with running_kubesim(state_dir=tmp_path / "s") as sim, pod_client(sim) as c:
        await c.create(pod("p", SLEEPER))
        obj = await c.get("p")
        assert obj["status"]["phase"] == "Pending"
        assert "nodeName" not in obj["spec"]
        status, body, _ = await c.request(
            "GET",
            "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true",
            headers={"Connection": "Upgrade", "Upgrade": "websocket"},
        )
        assert (status, body["message"]) == (400, "pod p does not have a host assigned")


async def test_exec_v5_streams_and_exit_codes(client: PodClient) -> None:
    await client.create(pod("p", SLEEPER))
    result = await client.exec("p", ["sh", "-c", "echo out; echo err >&2; pwd; exit 3"])
    assert result.first == b"\x01"  # "connected" hint on the lowest writable channel
    assert result.stdout == b"out\n" + str(client.server.pods.base / "default/p/c").encode() + b"\n"
    assert result.stderr == b"err\n"
    assert result.status == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: command terminated with exit "
        "code 3",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert result.close_code == 1000
    ok = await client.exec("p", ["true"])
    assert ok.status == {"metadata": {}, "status": "Success"}
    assert ok.close_code == 1000


async def test_exec_v5_stdin_close_signal(client: PodClient) -> None:
    await client.create(pod("p", SLEEPER))
    data = bytes(range(256)) * 4096  # 1 MiB
    result = await client.exec("p", ["sh", "-c", "tee copy | wc -c; sha256sum copy"], stdin=data)

    lines = result.stdout.decode().split("\n")
    assert lines[0].strip() == str(len(data))
    assert lines[1].split()[0] == hashlib.sha256(data).hexdigest()
    assert result.status == {"metadata": {}, "status": "Success"}


async def test_exec_tty_and_resize(client: PodClient) -> None:
    await client.create(pod("p", SLEEPER))
    result = await client.exec(
        "p",
        ["sh", "-c", "read x; stty size; tty; echo $TERM"],
        stdin=b"go\n",
        tty=True,
        resize=(123, 45),
    )
    text = result.stdout.decode()
    assert "45 123" in text
    assert "/dev/pts/" in text
    assert "xterm" in text
    assert result.stderr == b""
    assert result.close_code == 1000


async def test_exec_v4_protocol_and_kubelet_wording(client: PodClient) -> None:
    await client.create(pod("p", SLEEPER))
    result = await client.exec("p", ["sh", "-c", "exit 5"], protocol="v4.channel.k8s.io")
    assert result.status is not None
    assert result.status["message"] == (
        "command terminated with non-zero exit code: error executing command "
        "[sh -c exit 5], exit code 5"
    )
    assert result.status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    base64 = await client.exec("p", ["echo", "hi"], protocol="v4.base64.channel.k8s.io")
    assert base64.status == {"metadata": {}, "status": "Success"}


async def test_exec_missing_command_is_containerds_error(client: PodClient) -> None:
    await client.create(pod("p", SLEEPER))
    result = await client.exec("p", ["no-such-command"])
    assert result.status is not None
    assert result.status["reason"] == "InternalError"
    assert result.status["code"] == 500
    assert re.fullmatch(
        r"Internal error occurred: Internal error occurred: error executing command in "
        r'container: failed to exec in container: failed to start exec "[0-9a-f]{64}": OCI '
        r"runtime exec failed: exec failed: unable to start container process: exec: "
        r'"no-such-command": executable file not found in \$PATH: unknown',
        result.status["message"],
    )
    assert result.close_code == 1000
    absolute = await client.exec("p", ["/no/such"])
    assert absolute.status is not None
    assert (
        'exec: "/no/such": stat /no/such: no such file or directory' in absolute.status["message"]
    )


async def test_exec_refusals_before_upgrade(client: PodClient) -> None:
    two = [dict(SLEEPER, name="a"), dict(SLEEPER, name="b")]
    await client.create(pod("p", *two))
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
    base = "/api/v1/namespaces/default/pods"
    status, body, _ = await client.request(
        "GET", f"{base}/p/exec?command=true&stdout=1", headers=upgrade
    )
    assert (status, body["reason"], body["message"]) == (
        400,
        "BadRequest",
        "a container name must be specified for pod p, choose one of: [a b]",
    )
    status, body, _ = await client.request(
        "GET", f"{base}/p/exec?command=true&stdout=1&container=zz", headers=upgrade
    )
    assert (status, body["message"]) == (400, "container zz is not valid for pod p")
    status, body, _ = await client.request("GET", f"{base}/nope/exec?command=true", headers=upgrade)
    assert (status, body["message"]) == (404, 'pods "nope" not found')
    status, body, _ = await client.request("GET", f"{base}/p/exec?command=true&container=a")
    assert (status, body["message"]) == (400, "Upgrade request required")
    spdy = {
        "Connection": "Upgrade",
        "Upgrade": "SPDY/3.1",
        "X-Stream-Protocol-Version": "v4.channel.k8s.io",
    }
    status, body, _ = await client.request(
        "POST", f"{base}/p/exec?command=true&container=a&stdout=1", headers=spdy
    )
    assert status == 400
    assert body["message"].startswith("kubesim serves pods/exec over WebSocket only")


async def test_exec_into_exited_container(client: PodClient) -> None:
    await client.create(
        pod("p", {"name": "c", "image": "x", "command": ["true"]}, restartPolicy="Never")
    )
    await eventually(
        lambda: (
            client.server.pods.sandboxes[("default", "p")].containers["c"].state.get("terminated")
        )
    )
    result = await client.exec("p", ["true"])
    assert result.status is not None
    assert result.status["message"] == (
        'Internal error occurred: unable to upgrade connection: container not found ("c")'
    )
    assert result.close_code == 1000
    obj = await client.get("p")
    assert obj["status"]["phase"] == "Succeeded"


async def test_exec_rbac_needs_create_for_websocket(tmp_path: Path) -> None:
    """kube 1.35+: a WebSocket GET to pods/exec needs ``create`` besides ``get``."""
    config = KubesimConfig(
        pod_runtime=PodRuntimeConfig(workdir=tmp_path / "pods"),
        static_tokens={"alice-token": UserInfo(name="alice", groups=("system:authenticated",))},
    )
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "r", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    async with (
        running_kubesim(config, state_dir=tmp_path / "state") as sim,
        pod_client(sim) as client,
    ):
        await client.create(pod("p", SLEEPER))
        base = f"{sim.url}/apis/rbac.authorization.k8s.io/v1/namespaces/default"
        for kind, obj in (("roles", role), ("rolebindings", binding)):
            async with client.session.post(
                f"{base}/{kind}", json=obj, headers=client.headers()
            ) as r:
                assert r.status == 201
        status, body, _ = await client.request(
            "GET",
            "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=1",
            headers={"Connection": "Upgrade", "Upgrade": "websocket"},
            token="alice-token",
        )
        assert (status, body["reason"], body["message"]) == (
            403,
            "Forbidden",
            'pods "p" is forbidden: ',
        )
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.exec("p", ["true"], token="alice-token")
        assert refused.value.status == 403
        role["rules"][0]["verbs"] = ["get", "create"]
        async with client.session.put(f"{base}/roles/r", json=role, headers=client.headers()) as r:
            assert r.status == 200, await r.text()
        ok = await client.exec("p", ["true"], token="alice-token")
        assert ok.status == {"metadata": {}, "status": "Success"}


async def test_attach_to_main_process(client: PodClient) -> None:
    cat = {"name": "c", "image": "x", "command": ["cat"], "stdin": True}
    await client.create(pod("p", cat))
    path = "/api/v1/namespaces/default/pods/p/attach?stdin=true&stdout=true&stderr=true"
    async with client.ws(path, ["v5.channel.k8s.io"]) as ws:
        assert (await ws.receive_bytes()) == b"\x01"
        await ws.send_bytes(b"\x00hello\n")
        echoed = await asyncio.wait_for(ws.receive_bytes(), 5)
        assert echoed == b"\x01hello\n"
        await ws.close()
    _status, body, _ = await client.request("GET", "/api/v1/namespaces/default/pods/p/log")
    assert body == "hello\n"


async def test_attach_ends_when_container_exits(client: PodClient) -> None:
    main = {"name": "c", "image": "x", "command": ["sh", "-c", "sleep 0.3; echo bye"]}
    await client.create(pod("p", main, restartPolicy="Never"))
    result = await client.exec("p", [], subresource="attach")
    assert result.stdout == b"bye\n"
    assert result.status == {"metadata": {}, "status": "Success"}
    assert result.close_code == 1000


async def test_restart_keeps_previous_log(client: PodClient) -> None:
    main = {"name": "c", "image": "x", "command": ["sh", "-c", "echo run; exit 2"]}
    await client.create(pod("p", main, restartPolicy="OnFailure"))
    async with asyncio.timeout(5):
        while True:
            obj = await client.get("p")
            [status] = obj["status"]["containerStatuses"]
            if status["restartCount"] >= 1 and status["lastState"]:
                break
            await asyncio.sleep(0.05)
    assert status["restartCount"] >= 1
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert status["lastState"]["terminated"]["reason"] == "Error"
    code, body, _ = await client.request(
        "GET", "/api/v1/namespaces/default/pods/p/log?previous=true"
    )
    assert (code, body) == (200, "run\n")


async def test_processes_die_with_pod_and_server(tmp_path: Path) -> None:
    async with pod_sim(tmp_path) as sim, pod_client(sim) as client:
        await client.create(pod("p", dict(SLEEPER, command=["sh", "-c", "sleep 300 & sleep 300"])))
        await client.create(pod("q", SLEEPER))
        main = sim.pods.sandboxes[("default", "p")].containers["c"].process
        other = sim.pods.sandboxes[("default", "q")].containers["c"].process
        assert main is not None
        assert other is not None
        exec_task = asyncio.ensure_future(client.exec("p", ["sleep", "300"]))
        await eventually(lambda: bool(sim.pods.sandboxes[("default", "p")].execs))
        [exec_process] = sim.pods.sandboxes[("default", "p")].execs
        children = [
            int(p) for p in Path(f"/proc/{main.pid}/task/{main.pid}/children").read_text().split()
        ]
        assert children
        workdir = sim.pods.base / "default" / "p"
        assert workdir.is_dir()
        await client.delete("p")
        result = await asyncio.wait_for(exec_task, 5)
        assert result.status is not None
        assert result.status["reason"] == "NonZeroExitCode"
        assert result.status["details"]["causes"] == [{"reason": "ExitCode", "message": "137"}]
        for pid in (main.pid, exec_process.pid, *children):
            await eventually(lambda pid=pid: not alive(pid))
        await eventually(lambda: not workdir.exists())
        assert alive(other.pid)
    assert not alive(other.pid)


async def test_container_env_and_workdir(client: PodClient) -> None:
    spec = dict(
        SLEEPER,
        env=[
            {"name": "GREETING", "value": "hi"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    )
    await client.create(pod("p", spec))
    result = await client.exec("p", ["sh", "-c", 'echo "$GREETING $POD $HOSTNAME"'])
    assert result.stdout == b"hi p p\n"
