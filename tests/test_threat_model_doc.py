"""Every test docs/threat-model.md cites exists, so the page cannot claim proofs we do not have."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_every_cited_test_exists() -> None:
    text = (ROOT / "docs" / "threat-model.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(cited) >= 15
    for file, name in cited:
        path = ROOT / file
        assert path.is_file(), f"{file} is cited but missing"
        if name:
            assert name in _test_names(path), f"{file}::{name} is cited but missing"
