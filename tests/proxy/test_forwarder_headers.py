"""The forwarder's one-pass request header filter gives what the two-step one gives."""

from __future__ import annotations

import itertools
import random

import pytest

from clusternet_aa.proxy import headers as hop

NAMES = [
    "Accept",
    "Content-Type",
    "Host",
    "Authorization",
    "Connection",
    "Upgrade",
    "Keep-Alive",
    "TE",
    "Transfer-Encoding",
    "X-Hop",
    "X-Remote-User",
    "x-remote-extra-scope",
    "Impersonate-Group",
    "X-Custom-User",
    "X-Custom-Extra-A",
    "User-Agent",
]
VALUES = {
    "Connection": ["keep-alive", "Upgrade", "upgrade, X-Hop", "close", " x-custom-user , te"],
    "Upgrade": ["websocket", "SPDY/3.1", " "],
}


def _two_step(
    headers: list[tuple[str, str]], drop: frozenset[str], prefixes: tuple[str, ...]
) -> tuple[hop.Headers, bool]:
    upgrade = hop.is_upgrade(headers)
    forwarded = hop.forwardable_request_headers(headers, upgrade=upgrade)
    kept = tuple(
        (n, v) for n, v in forwarded if n.lower() not in drop and not n.lower().startswith(prefixes)
    )
    return kept, upgrade


def _random_headers(rng: random.Random) -> list[tuple[str, str]]:
    headers = []
    for name in rng.sample(NAMES, rng.randint(0, len(NAMES))):
        for _ in range(rng.choice((1, 1, 1, 2))):
            headers.append((name, rng.choice(VALUES.get(name, ["1", "v"]))))
    return headers


@pytest.mark.parametrize(
    ("drop", "prefixes"),
    [
        (frozenset(), ()),
        (frozenset({"authorization", "x-custom-user"}), ("x-custom-extra-",)),
    ],
)
def test_one_pass_matches_two_steps(drop: frozenset[str], prefixes: tuple[str, ...]) -> None:
    rng = random.Random(8)
    for _ in range(3000):
        headers = _random_headers(rng)
        assert hop.request_headers(headers, drop, prefixes) == _two_step(headers, drop, prefixes)


def test_plain_request_keeps_only_end_to_end_headers() -> None:
    headers = [
        ("Host", "hub"),
        ("Accept", "application/json"),
        ("Authorization", "Bearer t"),
        ("X-Remote-User", "u"),
        ("Impersonate-User", "root"),
        ("X-Custom-User", "u"),
        ("X-Custom-Extra-Scope", "s"),
        ("Accept-Encoding", "gzip"),
    ]
    forwarded, upgrade = hop.request_headers(
        headers, frozenset({"x-custom-user"}), ("x-custom-extra-",)
    )
    assert not upgrade
    assert forwarded == (("Accept", "application/json"), ("Accept-Encoding", "gzip"))
    # without the authenticator's names, only the fixed credential headers go
    assert ("X-Custom-User", "u") in hop.request_headers(headers)[0]


def test_upgrades_are_seen_through_the_two_step_way() -> None:
    for connection, upgrade_value in itertools.product(("Upgrade", "keep-alive"), ("websocket",)):
        headers = [("Connection", connection), ("Upgrade", upgrade_value), ("X-Custom-User", "u")]
        forwarded, upgrade = hop.request_headers(headers, frozenset({"x-custom-user"}))
        assert upgrade is (connection == "Upgrade")
        if upgrade:
            assert forwarded == (("Upgrade", "websocket"), ("Connection", "Upgrade"))
        else:
            assert forwarded == ()
