"""kubesim's certificates: a serving CA and certificate, and a client CA that signs user certs.

Clients verify kubesim exactly as they verify a real cluster (a CA in the kubeconfig, hostnames
in the SAN), and client certificates are real X.509 certs whose CN is the user and whose O
entries are the groups, so the TLS and x509-authentication code paths under test are the real ones.
Keys are ECDSA P-256: fast to generate, accepted by Go and by OpenSSL.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from clusternet_aa import certs

_VALIDITY_DAYS = 365
#: Names a kube-apiserver serving certificate carries, plus loopback.
DEFAULT_SERVER_NAMES: tuple[str, ...] = (
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
#: The front-proxy client certificate's CN, as kubeadm names it (``requestheader-allowed-names``).
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _load_key(pem: bytes) -> certs.PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("kubesim keys are ECDSA or RSA")
    return key


def make_ca(common_name: str) -> KeyPair:
    """A self-signed CA certificate (built by :mod:`clusternet_aa.certs`, as real CAs are)."""
    key = certs.new_key("ecdsa")
    cert = certs.make_ca(common_name, key, _VALIDITY_DAYS)
    return KeyPair(certs.cert_pem(cert), certs.key_pem(key))


def _leaf(
    ca: KeyPair,
    common_name: str,
    usage: Literal["server", "client"],
    *,
    sans: Sequence[str] = (),
    organizations: Sequence[str] = (),
) -> KeyPair:
    key = certs.new_key("ecdsa")
    cert = certs.issue_leaf(
        ca_cert=ca.cert,
        ca_key=_load_key(ca.key_pem),
        key=key,
        common_name=common_name,
        usage=usage,
        days=_VALIDITY_DAYS,
        sans=sans,
        organizations=organizations,
    )
    return KeyPair(certs.cert_pem(cert), certs.key_pem(key))


def issue_server_cert(ca: KeyPair, names: Sequence[str] = DEFAULT_SERVER_NAMES) -> KeyPair:
    """A serving certificate for ``names`` (DNS names or IP addresses)."""
    return _leaf(ca, "kube-apiserver", "server", sans=names)


def issue_client_cert(ca: KeyPair, user: str, groups: Sequence[str] = ()) -> KeyPair:
    """A client certificate: CN is the user name, one O per group (kube's x509 authenticator)."""
    return _leaf(ca, user, "client", organizations=groups)


@dataclass(frozen=True)
class Pki:
    """All key material of one kubesim instance."""

    ca: KeyPair
    server: KeyPair
    client_ca: KeyPair
    #: The request-header CA (``--requestheader-client-ca-file``): it signs only the front-proxy
    #: client certificate, so an extension server never mistakes a user cert for the proxy.
    front_proxy_ca: KeyPair
    #: What the aggregation layer presents to extension servers (``--proxy-client-cert-file``).
    front_proxy_client: KeyPair

    @classmethod
    def generate(cls, server_names: Sequence[str] = DEFAULT_SERVER_NAMES) -> Pki:
        ca = make_ca("kubesim-ca")
        front_proxy_ca = make_ca("kubesim-front-proxy-ca")
        return cls(
            ca=ca,
            server=issue_server_cert(ca, server_names),
            client_ca=make_ca("kubesim-client-ca"),
            front_proxy_ca=front_proxy_ca,
            front_proxy_client=issue_client_cert(front_proxy_ca, FRONT_PROXY_CLIENT_NAME),
        )

    def issue_client_cert(self, user: str, groups: Sequence[str] = ()) -> KeyPair:
        return issue_client_cert(self.client_ca, user, groups)

    def server_ssl_context(self) -> ssl.SSLContext:
        """TLS for the server: optional client certs, verified against the client CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory() as tmp:
            cert_file = Path(tmp, "tls.crt")
            key_file = Path(tmp, "tls.key")
            cert_file.write_bytes(self.server.cert_pem + self.ca.cert_pem)
            key_file.write_bytes(self.server.key_pem)
            context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(cadata=self.client_ca.cert_pem.decode())
        context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_ssl_context(self, client: KeyPair | None = None) -> ssl.SSLContext:
        """TLS for a Python client trusting this server, optionally presenting ``client``."""
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        if client is not None:
            with tempfile.TemporaryDirectory() as tmp:
                cert_file = Path(tmp, "client.crt")
                key_file = Path(tmp, "client.key")
                cert_file.write_bytes(client.cert_pem)
                key_file.write_bytes(client.key_pem)
                context.load_cert_chain(cert_file, key_file)
        return context

    def write(self, directory: Path) -> None:
        """Write the CA, server and client-CA files kube tooling expects, keys mode 0600."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "ca.crt": self.ca.cert_pem,
            "ca.key": self.ca.key_pem,
            "server.crt": self.server.cert_pem,
            "server.key": self.server.key_pem,
            "client-ca.crt": self.client_ca.cert_pem,
            "client-ca.key": self.client_ca.key_pem,
            "front-proxy-ca.crt": self.front_proxy_ca.cert_pem,
            "front-proxy-ca.key": self.front_proxy_ca.key_pem,
            "front-proxy-client.crt": self.front_proxy_client.cert_pem,
            "front-proxy-client.key": self.front_proxy_client.key_pem,
        }
        for name, data in files.items():
            path = directory / name
            path.write_bytes(data)
            if name.endswith(".key"):
                path.chmod(0o600)
