"""Certificates for installing clusternet-aa on real clusters (``clusternet-certs``).

Makes, with ``cryptography``:

* a CA for the hub's serving certificate (its PEM, base64-encoded, is the APIService
  ``caBundle``);
* the hub's serving certificate, with SANs for its Service DNS names
  (``clusternet-hub``, ``clusternet-hub.clusternet-system``, ``...svc``, ``...svc.cluster.local``)
  and any extra names or IPs;
* optionally front-proxy material for tests: a request-header CA and a ``front-proxy-client``
  certificate for client authentication (what kube-apiserver's aggregator presents).

Re-running keeps what is still good: an existing CA is never replaced unless forced, and a leaf
is re-issued only when it is missing, does not chain to the CA, has other SANs, or expires soon.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusternet_aa.errors import ClusternetError

KeyType = Literal["ecdsa", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Names of the files written in the output directory.
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVING_CERT = "tls.crt"
SERVING_KEY = "tls.key"
FRONT_PROXY_CA_CERT = "front-proxy-ca.crt"
FRONT_PROXY_CA_KEY = "front-proxy-ca.key"
FRONT_PROXY_CLIENT_CERT = "front-proxy-client.crt"
FRONT_PROXY_CLIENT_KEY = "front-proxy-client.key"
KUSTOMIZATION = "kustomization.yaml"

#: The Secret the hub Deployment mounts its serving certificate from.
SERVING_SECRET = "clusternet-hub-serving-cert"
FRONT_PROXY_CLIENT_CN = "front-proxy-client"
#: Leaves expiring within this are re-issued on a re-run.
RENEW_BEFORE = datetime.timedelta(days=30)
#: Clock skew allowance: certificates are valid from a little before now.
BACKDATE = datetime.timedelta(minutes=5)


class CertsError(ClusternetError):
    """The request cannot be fulfilled; the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class CertOptions:
    out_dir: Path
    service: str = "clusternet-hub"
    namespace: str = "clusternet-system"
    cluster_domain: str = "cluster.local"
    extra_sans: Sequence[str] = ()
    ca_days: int = 3650
    days: int = 365
    key_type: KeyType = "ecdsa"
    front_proxy: bool = False
    force: bool = False

    def service_dns_names(self) -> list[str]:
        svc = f"{self.service}.{self.namespace}.svc"
        return [
            self.service,
            f"{self.service}.{self.namespace}",
            svc,
            f"{svc}.{self.cluster_domain}",
        ]


@dataclass
class CertResult:
    """What a run did: file paths and which of them were (re)written."""

    out_dir: Path
    ca_pem: bytes
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)

    @property
    def ca_bundle(self) -> str:
        """The APIService ``caBundle``: base64 of the CA's PEM."""
        return base64.b64encode(self.ca_pem).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def make_ca(common_name: str, key: PrivateKey, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_leaf(
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    key: PrivateKey,
    common_name: str,
    usage: Literal["server", "client"],
    days: int,
    sans: Sequence[str] = (),
    organizations: Sequence[str] = (),
) -> x509.Certificate:
    """A leaf signed by ``ca_cert``: serverAuth (with SANs) or clientAuth."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(_san(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, *, private: bool) -> None:
    """Write atomically; keys are 0600 from the first byte, certificates 0644."""
    mode = 0o600 if private else 0o644
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _spki(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKey] | None:
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise CertsError(f"{cert_path} or {key_path} is not PEM: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertsError(f"{key_path}: unsupported key type {type(key).__name__}")
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise CertsError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def _ca(
    options: CertOptions, result: CertResult, cert_name: str, key_name: str, common_name: str
) -> tuple[x509.Certificate, PrivateKey]:
    cert_path, key_path = options.out_dir / cert_name, options.out_dir / key_name
    existing = None if options.force else _load_pair(cert_path, key_path)
    if existing is not None:
        cert, key = existing
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise CertsError(f"{cert_path} is not a CA certificate")
        if cert.not_valid_after_utc <= _now():
            raise CertsError(f"{cert_path} has expired; re-run with --force to make a new CA")
        result.kept += [cert_path, key_path]
        return existing
    key = new_key(options.key_type)
    cert = make_ca(common_name, key, options.ca_days)
    write_file(key_path, key_pem(key), private=True)
    write_file(cert_path, cert_pem(cert), private=False)
    result.written += [cert_path, key_path]
    return cert, key


def _leaf_still_good(
    cert: x509.Certificate, ca_cert: x509.Certificate, sans: Sequence[str], common_name: str
) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE <= _now():
        return False
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != common_name:
        return False
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return not sans
    return set(present) == set(_san(sans))


def _leaf(
    options: CertOptions,
    result: CertResult,
    *,
    ca: tuple[x509.Certificate, PrivateKey],
    cert_name: str,
    key_name: str,
    common_name: str,
    usage: Literal["server", "client"],
    sans: Sequence[str] = (),
) -> None:
    cert_path, key_path = options.out_dir / cert_name, options.out_dir / key_name
    ca_cert, ca_key = ca
    existing = None if options.force else _load_pair(cert_path, key_path)
    if existing is not None and _leaf_still_good(existing[0], ca_cert, sans, common_name):
        result.kept += [cert_path, key_path]
        return
    key = new_key(options.key_type)
    cert = issue_leaf(
        ca_cert=ca_cert,
        ca_key=ca_key,
        key=key,
        common_name=common_name,
        usage=usage,
        days=options.days,
        sans=sans,
    )
    write_file(key_path, key_pem(key), private=True)
    write_file(cert_path, cert_pem(cert), private=False)
    result.written += [cert_path, key_path]


def generate(options: CertOptions) -> CertResult:
    """Make (or keep) the CA, the hub serving certificate and optionally front-proxy material."""
    if options.days <= 0 or options.ca_days <= 0:
        raise CertsError("--days and --ca-days must be positive")
    options.out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(options.out_dir, 0o700)
    result = CertResult(options.out_dir, b"")
    ca = _ca(options, result, CA_CERT, CA_KEY, "clusternet-hub-ca")
    result.ca_pem = cert_pem(ca[0])
    sans = [*options.service_dns_names(), *options.extra_sans]
    sans = list(dict.fromkeys(sans))
    _leaf(
        options,
        result,
        ca=ca,
        cert_name=SERVING_CERT,
        key_name=SERVING_KEY,
        common_name=options.service_dns_names()[2],
        usage="server",
        sans=sans,
    )
    if options.front_proxy:
        fp_ca = _ca(options, result, FRONT_PROXY_CA_CERT, FRONT_PROXY_CA_KEY, "front-proxy-ca")
        _leaf(
            options,
            result,
            ca=fp_ca,
            cert_name=FRONT_PROXY_CLIENT_CERT,
            key_name=FRONT_PROXY_CLIENT_KEY,
            common_name=FRONT_PROXY_CLIENT_CN,
            usage="client",
        )
    return result
