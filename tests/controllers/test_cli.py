"""``clusternet-controller-manager`` as a real process, and its flags."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from clusternet_aa.cli import controller_manager as cli
from clusternet_aa.hub.settings import SettingsError
from clusternet_aa.kube.client import KubeClient
from clusternet_aa.sandbox.kubesim.server import KubesimServer
from tests.controllers.conftest import CRRS, crr_body, eventually

SCRIPT = Path(sys.executable).parent / "clusternet-controller-manager"
LEASE = (
    "/apis/coordination.k8s.io/v1/namespaces/clusternet-system/leases/clusternet-controller-manager"
)
CLUSTER_ID = "0c0ffee0-5d2b-4c1e-9b7a-0a1b2c3d4e5f"


async def test_process_leads_approves_and_exits_0_on_sigterm(
    sim: KubesimServer, kube: KubeClient, tmp_path: Path
) -> None:
    assert sim.config.state_dir is not None
    kubeconfig = sim.config.state_dir / "admin.kubeconfig"
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        f"--kubeconfig={kubeconfig}",
        "--leader-elect-lease-duration=2s",
        "--leader-elect-renew-deadline=1500ms",
        "--leader-elect-retry-period=200ms",
        "--leader-elect-identity=cm-test",
        "--log-format=json",
        "-v=4",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
    )
    output = bytearray()

    async def drain() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.read(65536):
            output.extend(chunk)

    reader = asyncio.create_task(drain())
    try:

        async def leading() -> bool:
            try:
                lease = await kube.request("GET", LEASE)
            except Exception:
                return False
            return bool(lease["spec"].get("holderIdentity") == "cm-test")

        await eventually(leading, within=15)
        await kube.request("POST", CRRS, body=crr_body(CLUSTER_ID, cluster_name="proc"))

        async def approved() -> bool:
            crr = await kube.request("GET", f"{CRRS}/clusternet-{CLUSTER_ID}")
            return bool((crr.get("status") or {}).get("result") == "Approved")

        await eventually(approved, within=15)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        await reader
        lease = await kube.request("GET", LEASE)
        assert lease["spec"]["holderIdentity"] == ""  # released on the way out
        text = output.decode()
        assert '"level": "info"' in text  # --log-format=json
        assert "approved ClusterRegistrationRequest" in text
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        reader.cancel()


def test_durations_take_go_syntax() -> None:
    assert cli.parse_duration("15s") == 15
    assert cli.parse_duration("1m30s") == 90
    assert cli.parse_duration("500ms") == pytest.approx(0.5)
    assert cli.parse_duration("2") == 2
    assert cli.parse_duration("1h") == 3600
    for bad in ("", "10x", "s", "1s2"):
        with pytest.raises(Exception, match="invalid duration"):
            cli.parse_duration(bad)


def test_controllers_flag() -> None:
    assert cli.enabled_controllers("*") == ("crrapprover", "clusterlifecycle")
    assert cli.enabled_controllers("*,-clusterlifecycle") == ("crrapprover",)
    assert cli.enabled_controllers("clusterlifecycle") == ("clusterlifecycle",)
    assert cli.enabled_controllers("deployer") == ()
    with pytest.raises(SettingsError, match="unknown controller"):
        cli.enabled_controllers("nope")


def test_clusternets_manifest_args_are_accepted() -> None:
    args = cli.build_parser().parse_args(
        [
            "--secure-port=8443",
            "--anonymous-auth-supported=true",
            "--leader-elect=true",
            "--leader-elect-resource-namespace=clusternet-system",
            "--reserved-namespace=clusternet-reserved",
            "--feature-gates=SocketConnection=true,Deployer=true,FeedInUseProtection=true,"
            "FeedInventory=true,ClusterInit=false",
            "--controllers=*",
        ]
    )
    settings = cli.settings_from_args(args)
    assert settings.leader_elect
    assert settings.leader_election.name == "clusternet-controller-manager"
    assert settings.leader_election.lease_duration == 15
    assert settings.leader_election.renew_deadline == 10
    assert settings.leader_election.retry_period == 2
    assert settings.feature_gates["SocketConnection"]
    assert settings.lifecycle.grace_multiplier == 3


def test_leader_elect_false_and_bad_flags() -> None:
    parser = cli.build_parser()
    settings = cli.settings_from_args(
        parser.parse_args(["--leader-elect=false", "--cluster-lifecycle-grace-multiplier=1.5"])
    )
    assert not settings.leader_elect
    assert settings.lifecycle.grace_multiplier == 1.5
    with pytest.raises(SettingsError, match="unrecognized feature gate"):
        cli.settings_from_args(parser.parse_args(["--feature-gates=Bogus=true"]))
    with pytest.raises(SettingsError, match="leaseDuration"):
        cli.settings_from_args(parser.parse_args(["--leader-elect-lease-duration=5s"]))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--threadiness=0"])
    assert exit_info.value.code == 2
