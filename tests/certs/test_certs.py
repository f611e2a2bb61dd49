"""clusternet-certs: chains, SANs, EKUs, key usages, validity, file modes, idempotent re-runs."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from clusternet_aa.certs import __main__ as cli

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "certs"
    args = ["-q", "--out-dir", str(directory), "--front-proxy", "--extra-san", "hub.example.com",
            "--extra-san", "10.0.0.7"]  # fmt: skip
    assert cli.main(args) == 0
    ca_bundle = capsys.readouterr().out.strip()
    assert base64.b64decode(ca_bundle) == (directory / "ca.crt").read_bytes()
    return directory


def test_serving_certificate_chains_and_names_the_service(out: Path) -> None:
    ca, leaf = load(out / "ca.crt"), load(out / "tls.crt")
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "clusternet-hub",
        "clusternet-hub.clusternet-system",
        "clusternet-hub.clusternet-system.svc",
        "clusternet-hub.clusternet-system.svc.cluster.local",
        "hub.example.com",
    ]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign
    assert ca_usage.crl_sign
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Validity: a year for the leaf (backdated a little for clock skew), ten for the CA.
    now = datetime.datetime.now(datetime.UTC)
    assert leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc
    assert abs(
        (leaf.not_valid_after_utc - now) - datetime.timedelta(days=365)
    ) < datetime.timedelta(minutes=1)
    assert ca.not_valid_after_utc - now > datetime.timedelta(days=3649)


def test_python_tls_accepts_the_pair_for_the_service_name(out: Path) -> None:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(out / "tls.crt", out / "tls.key")
    client = ssl.create_default_context(cafile=str(out / "ca.crt"))
    # The hostname check uses the same SAN matching the aggregator does.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(incoming, outgoing, server_hostname="clusternet-hub.clusternet-system.svc")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(outgoing.read())
        incoming.write(s_out.read())
    c.do_handshake()
    assert c.version() is not None


def test_front_proxy_client_is_for_client_auth(out: Path) -> None:
    ca, client = load(out / "front-proxy-ca.crt"), load(out / "front-proxy-client.crt")
    client.verify_directly_issued_by(ca)
    assert client.subject.rfc4514_string() == "CN=front-proxy-client"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(ValueError):  # noqa: PT011 - a different CA from the serving one
        client.verify_directly_issued_by(load(out / "ca.crt"))


def test_keys_are_private_and_certificates_readable(out: Path) -> None:
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o600 if path.suffix == ".key" else 0o644), path.name


def test_rerun_keeps_the_ca_and_good_leaves_unless_forced(
    out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    base = ["-q", "--out-dir", str(out), "--front-proxy", "--extra-san", "hub.example.com",
            "--extra-san", "10.0.0.7"]  # fmt: skip
    assert cli.main(base) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # Other SANs: a new serving certificate from the same CA.
    assert cli.main(["-q", "--out-dir", str(out), "--front-proxy"]) == 0
    assert (out / "ca.crt").read_bytes() == before["ca.crt"]
    assert (out / "tls.crt").read_bytes() != before["tls.crt"]
    load(out / "tls.crt").verify_directly_issued_by(load(out / "ca.crt"))
    # --force replaces everything.
    assert cli.main(["-q", "--out-dir", str(out), "--front-proxy", "--force"]) == 0
    assert (out / "ca.crt").read_bytes() != before["ca.crt"]
    assert (out / "front-proxy-ca.crt").read_bytes() != before["front-proxy-ca.crt"]
    capsys.readouterr()


def test_a_leaf_from_another_ca_is_reissued(out: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert cli.main(["-q", "--out-dir", str(other)]) == 0
    (out / "tls.crt").write_bytes((other / "tls.crt").read_bytes())
    (out / "tls.key").write_bytes((other / "tls.key").read_bytes())
    assert cli.main(["-q", "--out-dir", str(out)]) == 0
    load(out / "tls.crt").verify_directly_issued_by(load(out / "ca.crt"))


def test_mismatched_key_is_a_clear_error(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (out / "ca.key").write_bytes((out / "front-proxy-ca.key").read_bytes())
    assert cli.main(["-q", "--out-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clusternet-certs: error: ")
    assert "is not the key of" in err


def test_apiservice_copy_gets_the_ca_bundle(out: Path, tmp_path: Path) -> None:
    target = tmp_path / "apiservice.yaml"
    source = ROOT / "manifests" / "hub" / "apiservice.yaml"
    args = [
        "-q",
        "--out-dir",
        str(out),
        "--apiservice",
        str(source),
        "--apiservice-out",
        str(target),
    ]
    assert cli.main(args) == 0
    (doc,) = yaml.safe_load_all(target.read_text())
    assert base64.b64decode(doc["spec"]["caBundle"]) == (out / "ca.crt").read_bytes()
    assert "insecureSkipTLSVerify" not in doc["spec"]
    assert doc["spec"]["group"] == "proxies.clusternet.io"


def test_rsa_keys_and_json_logs(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "clusternet_aa.certs", "--out-dir", str(tmp_path / "rsa"),
            "--key-type", "rsa", "--log-format", "json"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    events = [json.loads(line) for line in result.stderr.splitlines()]
    wrote = {e["file"].rsplit("/", 1)[-1] for e in events if e.get("action") == "wrote"}
    assert wrote == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    leaf = load(tmp_path / "rsa" / "tls.crt")
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
