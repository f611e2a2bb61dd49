"""The krew manifest names the plugin kubectl finds, at the project's version."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.manifests.kubectl_runner import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_krew_manifest_matches_the_console_script_and_version() -> None:
    manifest = yaml.safe_load((ROOT / "plugins" / "krew" / "clusternet.yaml").read_text())
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "clusternet"
    spec = manifest["spec"]
    version = PYPROJECT["project"]["version"]
    assert spec["version"] == f"v{version}"
    assert len(spec["shortDescription"]) <= 80
    for platform in spec["platforms"]:
        assert platform["bin"] == "kubectl-clusternet"
        assert "kubectl-clusternet" in PYPROJECT["project"]["scripts"]
        assert f"/v{version}/" in platform["uri"]
        assert re.fullmatch(r"[0-9a-f]{64}", platform["sha256"])
        assert {"key", "operator", "values"} <= platform["selector"]["matchExpressions"][0].keys()
