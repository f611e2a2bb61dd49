"""The tunnel benchmark runs end to end in its tiny mode and reports every figure.

It checks the shape of the report only: speed is the benchmark's business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._ssh import find_sshd

REPO = Path(__file__).resolve().parent.parent
STAT_KEYS = {"median", "min", "max", "q1", "q3", "n", "samples"}


def _is_stat(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() >= STAT_KEYS and value["n"] >= 1


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_tunnel_benchmark_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "tunnel.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.tunnel_bench", "--tiny", "--quiet", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert "| target | value | limit | result |" in result.stdout
    assert out.with_suffix(".md").read_text().startswith("Tunnel benchmark")

    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "python", "uvloop", "aiohttp", "openssl", "date"):
        assert machine[key], key
    assert report["inputs"]["rounds"] == 1

    ssh_expected = find_sshd() is not None
    paths = {"tcp", "tls", "tunnel"} | ({"ssh"} if ssh_expected else set())
    if not ssh_expected:
        assert any("ssh -L skipped" in note for note in report["notes"])
    for direction in ("download", "upload"):
        assert set(report["bulk_mbps"][direction]) == paths
        for stat in report["bulk_mbps"][direction].values():
            assert _is_stat(stat)
            assert stat["median"] > 0
        ratios = report["bulk_ratios"][direction]
        assert {"tunnel/tls", "tunnel/tcp"} <= ratios.keys()
        assert ("tunnel/ssh" in ratios) is ssh_expected
        assert all(_is_stat(r) and r["of_medians"] > 0 for r in ratios.values())

    assert set(report["concurrent"]) == paths
    for figures in report["concurrent"].values():
        for key in ("aggregate_mbps", "jain_index", "min_over_max", "per_stream_min_mbps"):
            assert _is_stat(figures[key]), key

    hol = report["hol"]
    for key in (
        "baseline_p50_ms",
        "baseline_p99_ms",
        "stalled_p50_ms",
        "stalled_p99_ms",
        "added_p99_ms",
        "stalled_receiver_buffered_bytes",
        "stalled_sender_queued_bytes",
    ):
        assert _is_stat(hol[key]), key
    assert hol["window_bytes"] > 0
    assert hol["stalled_receiver_buffered_bytes"]["max"] > 0  # the stalled stream did fill

    idle = report["idle"]
    for key in (
        "hub_rss_per_session_bytes",
        "hub_tracemalloc_per_session_bytes",
        "hub_tracemalloc_python_per_session_bytes",
        "agent_rss_per_session_bytes",
    ):
        assert _is_stat(idle[key]), key

    targets = {t["target"]: t for t in report["targets"]}
    assert len(targets) == 7
    for target in targets.values():
        assert target["result"] in ({"PASS", "MISS"} if target["value"] is not None else {"SKIP"})
