"""The hub's serving certificate and its TLS server context.

Serving: ``--tls-cert-file``/``--tls-private-key-file`` when given, else a self-signed certificate
made in memory at start (Clusternet does the same; the APIService then says
``insecureSkipTLSVerify: true``).

Client certificates: the context *asks* for one (CERT_OPTIONAL) and lets OpenSSL check it against
the union of the request-header CA and the client CA, because Python's ``ssl`` cannot accept a
certificate without verifying it. OpenSSL cannot say *which* CA verified it (``get_verified_chain``
is 3.13+), so authentication re-verifies the leaf in Python against each bundle separately
(:mod:`clusternet_aa.apiserver.authn`). CAs learned later (the ConfigMap changed) are added to
the live context: OpenSSL consults the context's store at each handshake. A CA can never be
removed from it, which is why the Python check, not the handshake, decides who is trusted.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clusternet_aa.errors import ClusternetError

#: Names the self-signed certificate carries besides the host name.
SELF_SIGNED_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
_SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)


class TLSConfigError(ClusternetError):
    """The serving certificate or a CA bundle cannot be loaded."""


@dataclass(frozen=True)
class ServingCert:
    """PEM certificate chain and PEM private key the hub serves with."""

    cert_pem: bytes
    key_pem: bytes
    #: True when made in memory at start (nobody can verify it but by pinning).
    self_signed: bool = False


def self_signed(names: Sequence[str] = ()) -> ServingCert:
    """A fresh self-signed serving certificate for ``names`` plus loopback and the host name."""
    key = ec.generate_private_key(ec.SECP256R1())
    all_names = list(dict.fromkeys([*names, *SELF_SIGNED_NAMES, socket.gethostname()]))
    sans: list[x509.GeneralName] = []
    for name in all_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clusternet-hub")])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _SELF_SIGNED_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ServingCert(cert.public_bytes(serialization.Encoding.PEM), key_pem, self_signed=True)


def load_serving_cert(
    cert_file: Path | None, key_file: Path | None, *, names: Sequence[str] = ()
) -> ServingCert:
    """The pair from the flags, or a self-signed one when neither is given."""
    if cert_file is None and key_file is None:
        return self_signed(names)
    if cert_file is None or key_file is None:
        raise TLSConfigError("--tls-cert-file and --tls-private-key-file go together")
    try:
        return ServingCert(cert_file.read_bytes(), key_file.read_bytes())
    except OSError as exc:
        raise TLSConfigError(f"cannot read the serving certificate: {exc}") from exc


def parse_pem_bundle(pem: bytes | str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; TLSConfigError when there is none or it is garbled."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(f"not a PEM certificate bundle: {exc}") from exc
    return certs


def server_context(serving: ServingCert, client_cas: Iterable[x509.Certificate]) -> ssl.SSLContext:
    """TLS 1.2+ server context presenting ``serving``, asking for an optional client cert."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.2 renegotiation, as Go's TLS server: a connection keeps the client certificate
    # of its handshake, which authentication relies on (it looks the certificate up once per
    # connection), and renegotiation only ever served attacks and client-triggered CPU load.
    context.options |= ssl.OP_NO_RENEGOTIATION
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_bytes(serving.cert_pem)
        key_file.write_bytes(serving.key_pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"cannot load the serving certificate: {exc}") from exc
    context.verify_mode = ssl.CERT_OPTIONAL
    add_client_cas(context, client_cas)
    return context


def offer_alpn(context: ssl.SSLContext, *, http2: bool) -> None:
    """Offer HTTP/2 (``h2``) before HTTP/1.1 in the handshake, or HTTP/1.1 only: clients that
    speak HTTP/2 (client-go, the aggregator) then multiplex their requests on one connection."""
    context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])


def add_client_cas(context: ssl.SSLContext, cas: Iterable[x509.Certificate]) -> None:
    """Let handshakes accept client certs from ``cas`` too (adding twice is harmless)."""
    pem = b"".join(ca.public_bytes(serialization.Encoding.PEM) for ca in cas)
    if pem:
        context.load_verify_locations(cadata=pem.decode())


def peer_certificate(request: web.BaseRequest) -> x509.Certificate | None:
    """The client certificate of the TLS connection ``request`` came on, if it sent one."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der: bytes | None = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None
