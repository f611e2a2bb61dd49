"""The README's main job until the sandbox lands: hub, agent process, kubectl through the tunnel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.e2e
def test_demo_runs_kubectl_through_the_tunnel(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusternet_aa.cli.tunnel_demo",
            "--state-dir",
            str(tmp_path),
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "agent (pid" in result.stdout
    assert "kube-system" in result.stdout
    assert "Active" in result.stdout
    assert (tmp_path / "kubeconfig").is_file()
    assert "NO_ERROR drained" in result.stderr
