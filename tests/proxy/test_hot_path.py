"""The per-request shortcuts of the proxy keep the answers of the long way."""

from __future__ import annotations

import pytest

from clusternet_aa.apiserver.status import StatusError
from clusternet_aa.proxy import forwarder
from clusternet_aa.proxy import headers as hop
from clusternet_aa.proxy.executor import _identity_key

BASE = "/apis/proxies.clusternet.io/v1alpha1/sockets/c1/proxy"


def test_parsed_paths_are_remembered_without_sharing_state() -> None:
    path = BASE + "/https/10.0.0.1:6443/api/v1/pods?watch=1"
    first_id, first = forwarder.parse_proxy_path(path)
    assert path in forwarder._PARSED
    second_id, second = forwarder.parse_proxy_path(path)
    assert (first_id, first) == (second_id, second)
    assert first == forwarder._parse_proxy_path(path)[1]
    assert second.metadata == {"kind": "url", "scheme": "https", "host": "10.0.0.1:6443"}
    first.metadata["host"] = "evil:1"  # a caller changing its copy changes nobody else's
    assert forwarder.parse_proxy_path(path)[1].metadata["host"] == "10.0.0.1:6443"


@pytest.mark.parametrize(
    "path",
    [BASE + "/direct/../../x", BASE + "/direct/%2e%2e/x", BASE + "/ftp/x", "/api/v1/pods"],
)
def test_refused_paths_stay_refused(path: str) -> None:
    for _ in range(2):
        with pytest.raises(StatusError):
            forwarder.parse_proxy_path(path)
    assert path not in forwarder._PARSED


def test_long_paths_are_not_kept() -> None:
    path = BASE + "/direct/api/v1/pods?labelSelector=" + "a" * 1000
    assert forwarder.parse_proxy_path(path)[1].path.startswith("/api/v1/pods?")
    assert path not in forwarder._PARSED


@pytest.mark.parametrize(
    "identity",
    [
        None,
        [],
        {"user": 1},
        {"user": "u", "groups": "abc"},
        {"user": "u", "groups": [1]},
        {"user": "u", "groups": (), "extra": {}},
        {"user": "u", "extra": {"k": "v"}},
        {"user": "u", "extra": {"k": [b"v"]}},
        {"user": "u", "uid": None},
        {"user": "u", "surprise": True},
    ],
)
def test_identity_keys_only_for_exact_shapes(identity: object) -> None:
    assert _identity_key(identity) is None


def test_identity_keys_tell_identities_apart() -> None:
    a = _identity_key({"user": "u", "groups": ["g"], "extra": {"k": ["v"]}})
    b = _identity_key({"user": "u", "uid": "", "groups": ["g"], "extra": {"k": ["v"]}})
    c = _identity_key({"user": "u", "groups": ["g"], "extra": {"k": ["v", "w"]}})
    assert a == b
    assert a is not None
    assert a != c


def test_connection_named_headers_are_dropped_both_ways() -> None:
    request = [
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Accept", "json"),
        ("Authorization", "Bearer t"),
        ("X-Remote-User", "u"),
        ("Impersonate-User", "root"),
    ]
    assert hop.forwardable_request_headers(request, upgrade=False) == (("Accept", "json"),)
    response = [("Connection", "close, X-Hop"), ("X-Hop", "1"), ("Content-Length", "3"), ("A", "b")]
    assert hop.forwardable_response_headers(response) == (("A", "b"),)
    switching = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Keep-Alive", "x")]
    assert hop.forwardable_response_headers(switching, switching=True) == (
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
    )
