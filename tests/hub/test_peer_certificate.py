"""The authenticator remembers each TLS connection's client certificate: sound only because the
hub's TLS server refuses renegotiation, and only per connection (never another's)."""

from __future__ import annotations

import gc
import ssl
from typing import Any

from cryptography.hazmat.primitives import serialization

from clusternet_aa.apiserver import tls
from clusternet_aa.apiserver.authn import Authenticator
from clusternet_aa.apiserver.trust import Trust, TrustFlags
from tests.hub import certs


class _Peer:
    """Stands in for ``ssl.SSLObject``: a client certificate, and how often it was asked."""

    __slots__ = ()
    der: bytes | None
    asked: int

    def __init__(self, der: bytes | None) -> None:
        self.der = der
        self.asked = 0

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        assert binary_form
        self.asked += 1
        return self.der


class _SSLObject(_Peer):
    """Takes weak references, as ``ssl.SSLObject`` does (no ``__slots__``)."""


class _SlottedSSLObject(_Peer):
    """An SSL object that takes no weak references: the authenticator must still work."""

    __slots__ = ("asked", "der")


class _Transport:
    def __init__(self, ssl_object: Any) -> None:
        self.ssl_object = ssl_object

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.ssl_object if name == "ssl_object" else default


class _Request:
    def __init__(self, ssl_object: Any) -> None:
        self.transport = _Transport(ssl_object)


def _der(pair: certs.Pair) -> bytes:
    return pair.cert.public_bytes(serialization.Encoding.DER)


def _authenticator() -> Authenticator:
    ca = certs.make_ca("front-proxy-ca")
    return Authenticator(Trust(TrustFlags(requestheader_ca_pem=ca.cert_pem)), None)


def test_the_servers_tls_refuses_renegotiation() -> None:
    context = tls.server_context(tls.self_signed(["localhost"]), [])
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_each_connection_keeps_its_own_certificate() -> None:
    ca = certs.make_ca("ca")
    alice, bob = certs.issue(ca, "alice"), certs.issue(ca, "bob")
    authn = _authenticator()
    first, second, anonymous = _SSLObject(_der(alice)), _SSLObject(_der(bob)), _SSLObject(None)
    for _ in range(3):  # interleaved requests on three live connections
        for conn, expected in ((first, alice), (second, bob), (anonymous, None)):
            cert = authn.peer_certificate(_Request(conn))  # type: ignore[arg-type]
            if expected is None:
                assert cert is None
            else:
                assert cert is not None
                assert cert.public_bytes(serialization.Encoding.DER) == _der(expected)
    # OpenSSL was asked once per connection, not once per request.
    assert (first.asked, second.asked, anonymous.asked) == (1, 1, 1)


def test_a_closed_connections_entry_goes_with_it() -> None:
    ca = certs.make_ca("ca")
    authn = _authenticator()
    conn: _SSLObject | None = _SSLObject(_der(certs.issue(ca, "alice")))
    assert authn.peer_certificate(_Request(conn)) is not None  # type: ignore[arg-type]
    assert len(authn._by_connection) == 1
    del conn
    gc.collect()
    assert len(authn._by_connection) == 0
    # A new connection with another certificate (perhaps at the same address) is asked anew.
    bob = certs.issue(ca, "bob")
    again = _SSLObject(_der(bob))
    cert = authn.peer_certificate(_Request(again))  # type: ignore[arg-type]
    assert cert is not None
    assert cert.public_bytes(serialization.Encoding.DER) == _der(bob)
    assert again.asked == 1


def test_an_ssl_object_without_weak_references_is_asked_every_time() -> None:
    ca = certs.make_ca("ca")
    alice = certs.issue(ca, "alice")
    authn = _authenticator()
    conn = _SlottedSSLObject(_der(alice))
    for _ in range(2):
        cert = authn.peer_certificate(_Request(conn))  # type: ignore[arg-type]
        assert cert is not None
        assert cert.public_bytes(serialization.Encoding.DER) == _der(alice)
    assert conn.asked == 2
