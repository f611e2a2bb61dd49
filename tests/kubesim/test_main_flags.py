"""The standalone kubesim's flags for the sandbox: static tokens and the pod runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusternet_aa.sandbox.kubesim.__main__ import parse_args, read_token_file


def test_token_auth_file_reads_kube_apiserver_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text('# comment\nt1,alice,u1,"dev,ops"\nt2,bob,u2\n\n')
    tokens = read_token_file(path)
    assert tokens["t1"].name == "alice"
    assert tokens["t1"].uid == "u1"
    assert tokens["t1"].groups == ("dev", "ops")
    assert tokens["t2"].groups == ()
    assert set(tokens) == {"t1", "t2"}


def test_token_auth_file_rejects_short_rows(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("only,two\n")
    with pytest.raises(SystemExit, match=r"tokens\.csv:1"):
        read_token_file(path)


def test_flags_parse(tmp_path: Path) -> None:
    args = parse_args(
        ["--state-dir", str(tmp_path), "--pod-runtime-dir", str(tmp_path / "pods"),
         "--apiservice-resync-seconds", "0.5"]
    )  # fmt: skip
    assert args.pod_runtime_dir == tmp_path / "pods"
    assert args.apiservice_resync_seconds == 0.5
