"""The hub benchmark runs end to end in its tiny mode and reports every figure.

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
@pytest.mark.timeout(120)
def test_hub_benchmark_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "hub.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.hub_bench", "--tiny", "--quiet", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert "| target (issue 8) | value | limit | result |" in result.stdout
    assert out.with_suffix(".md").read_text().startswith("Hub benchmark")
    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "python", "uvloop", "aiohttp", "openssl", "date"):
        assert machine[key], key
    assert report["inputs"]["rounds"] == 1

    small = report["small"]
    assert set(small) == {"direct", "impersonated", "hub", "hub_h2", "aggregated"}
    for path, figures in small.items():
        for key in ("p50_ms", "p99_ms", "rps_c32"):
            assert _is_stat(figures[key]), (path, key)
            assert figures[key]["median"] > 0, (path, key)
    for path in ("hub", "hub_h2", "aggregated"):
        for key in ("added_p50_ms", "hub_cpu_s_per_1000", "rps_per_hub_core", "rps_vs_direct"):
            assert _is_stat(small[path][key]), (path, key)
    assert _is_stat(small["hub"]["added_p50_vs_impersonated_ms"])

    bulk = report["bulk"]
    ssh_expected = find_sshd() is not None
    paths = {"tls", "tunnel"} | ({"ssh"} if ssh_expected else set())
    for direction in ("download", "upload"):
        assert set(bulk["mbps"][direction]) == paths
        assert all(stat["median"] > 0 for stat in bulk["mbps"][direction].values())
        assert ("tunnel/ssh" in bulk["ratios"][direction]) is ssh_expected
        assert _is_stat(bulk["ratios"][direction]["tunnel/tls"])

    hol = report["hol"]
    for key in ("baseline_p99_ms", "stalled_p99_ms", "added_p99_ms", "held_bytes"):
        assert _is_stat(hol[key]), key
    assert hol["held_stream_bytes"]["max"] > 0  # the stalled stream did fill

    fleet = report["fleet"]
    assert len(fleet["sizes"]) == 3
    for size in fleet["sizes"]:
        figures = fleet["per_size"][str(size)]
        assert figures["tunnels"] == size
        assert figures["hub_rss_per_tunnel_bytes"] is not None
    assert fleet["scaled"]["cpu_pct_at_15s_for_10000"] >= 0

    watch = report["watch"]
    assert len(watch["per_size"]) == 3
    for size, figures in watch["per_size"].items():
        assert figures["hub_streams"] >= int(size)

    assert len(report["trend_small"]) == 3
    results = {t["result"] for t in report["targets"]}
    assert results <= {"PASS", "MISS", "SKIP"}
    assert len(report["targets"]) >= 17
    assert any("HTTP/2" in t["target"] and "per hub core" in t["target"] for t in report["targets"])
