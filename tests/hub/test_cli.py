"""``clusternet-hub`` as a real process, and its flag parsing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from clusternet_aa.cli import hub as cli
from clusternet_aa.hub.settings import SettingsError, parse_feature_gates
from tests.hub import certs
from tests.hub.conftest import PKI

SCRIPT = Path(sys.executable).parent / "clusternet-hub"
SERVING = re.compile(r"serving on (https://127\.0\.0\.1:\d+)")


async def _read_url(stream: asyncio.StreamReader) -> tuple[str, list[str]]:
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(stream.readline(), 15)).decode()
        assert line, "clusternet-hub exited before serving:\n" + "".join(lines)
        lines.append(line)
        found = SERVING.search(line)
        if found:
            return found.group(1), lines


async def test_process_serves_and_stops_on_sigterm(
    pki: PKI, parent_kubeconfig: Path, tmp_path: Path
) -> None:
    serving_ca = certs.make_ca("serving-ca")
    cert_file, key_file = certs.issue(serving_ca, "hub", usage=None, sans=("localhost",)).write(
        tmp_path, "serving"
    )
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        f"--tls-cert-file={cert_file}",
        f"--tls-private-key-file={key_file}",
        f"--kubeconfig={parent_kubeconfig}",
        f"--requestheader-client-ca-file={pki.file(pki.front_ca, 'front-ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--feature-gates=SocketConnection=true",
        "--log-format=json",
        "-v=2",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
    )
    try:
        assert process.stderr is not None
        url, lines = await _read_url(process.stderr)
        assert lines[-1].startswith("{")  # --log-format=json
        context = certs.client_context(serving_ca.cert_pem)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s:
            # localhost is in the certificate; the process listens on 127.0.0.1
            port = url.rsplit(":", 1)[1]
            async with s.get(f"https://localhost:{port}/healthz") as response:
                assert response.status == 200
                assert await response.text() == "ok"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 5) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_missing_in_cluster_config_is_a_clean_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "--bind-address=127.0.0.1",
        "--secure-port=0",
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    _, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 1
    assert "cannot load client configuration" in err.decode()
    assert "Traceback" not in err.decode()


def test_feature_gates_like_kube() -> None:
    assert parse_feature_gates("") == {"SocketConnection": True}
    assert parse_feature_gates("SocketConnection=false") == {"SocketConnection": False}
    assert parse_feature_gates(" SocketConnection=True ,") == {"SocketConnection": True}
    with pytest.raises(SettingsError, match="unrecognized feature gate: ShadowAPI"):
        parse_feature_gates("ShadowAPI=true")
    with pytest.raises(SettingsError, match="missing bool value"):
        parse_feature_gates("SocketConnection")
    with pytest.raises(SettingsError, match="invalid"):
        parse_feature_gates("SocketConnection=yes")


def test_flags_map_onto_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(certs.make_ca("x").cert_pem)
    args = cli.build_parser().parse_args(
        [
            "--secure-port=8443",
            f"--client-ca-file={ca}",
            "--requestheader-allowed-names=front-proxy-client, aggregator",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-,X-Other-",
            "--requestheader-allowed-names=",
            "--tunnel-wait-seconds=2.5",
        ]
    )
    settings = cli.settings_from_args(args)
    assert settings.secure_port == 8443
    assert settings.auth.client_ca_file == ca
    assert settings.auth.requestheader_allowed_names == ()  # given empty: any CN
    assert settings.auth.requestheader_group_headers is None  # not given: ConfigMap decides
    assert settings.auth.requestheader_extra_headers_prefix == ("X-Remote-Extra-", "X-Other-")
    assert settings.tunnel_wait_seconds == 2.5
    assert settings.socket_connection
    with pytest.raises(SystemExit) as exited:
        cli.main(["--feature-gates=Nope=true"])
    assert exited.value.code == 2
    assert "unrecognized feature gate: Nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([f"--tls-cert-file={ca}"])
    assert "go together" in capsys.readouterr().err
