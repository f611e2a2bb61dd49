"""Which HTTP headers cross each hop of the proxy.

Hop-by-hop headers (RFC 9110 §7.6.1, plus those a ``Connection`` header names) belong to one
connection and are dropped when a request is re-originated; ``Upgrade``/``Connection`` are kept
only where the upgrade really happens. Credentials never travel: the caller's
``Authorization``, ``Impersonate-*`` and ``X-Remote-*`` are dropped at the hub, and the agent adds
its own.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from clusternet_aa.tunnel.protocol.frames import Headers

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_CREDENTIAL_PREFIXES = ("impersonate-", "x-remote-")
_UPGRADE_KEEP = frozenset({"connection", "upgrade"})


def is_upgrade(headers: Iterable[tuple[str, str]]) -> bool:
    """True for a request asking to switch protocols (websocket, SPDY)."""
    connection_upgrade = False
    has_upgrade = False
    for name, value in headers:
        lower = name.lower()
        if lower == "connection":
            connection_upgrade |= "upgrade" in (t.strip().lower() for t in value.split(","))
        elif lower == "upgrade" and value.strip():
            has_upgrade = True
    return connection_upgrade and has_upgrade


#: Dropped from every request that has neither Connection nor Upgrade header.
_ALWAYS_DROPPED = HOP_BY_HOP | {"authorization"}

#: What :func:`request_headers`' one pass does with a header name (see :func:`_verdict`).
_KEEP, _DROP, _DROP_CONNECTION = 0, 1, 2
#: Verdicts per header name as the caller spelled it, per ``(drop, drop_prefixes)``: a hub sees
#: the same few names on every request, and a lookup is a third of lowering and testing each
#: one. Bounded: names up to 64 characters, 256 names per configuration, 16 configurations
#: (cleared when full); a verdict depends only on the name and its configuration.
_VERDICTS: dict[tuple[frozenset[str], tuple[str, ...]], dict[str, int]] = {}
_VERDICT_NAME_LENGTH = 64
_VERDICT_NAMES = 256
_VERDICT_CONFIGURATIONS = 16


def _verdict(name: str, drop: frozenset[str], drop_prefixes: tuple[str, ...]) -> int:
    """Whether :func:`request_headers`' one pass keeps the header ``name``, drops it, or drops
    it as ``Connection``/``Upgrade`` (then the request takes the two-step way)."""
    lower = name.lower()
    if lower in _ALWAYS_DROPPED:
        return _DROP_CONNECTION if lower == "connection" or lower == "upgrade" else _DROP
    if lower in drop or lower.startswith(_CREDENTIAL_PREFIXES) or lower.startswith(drop_prefixes):
        return _DROP
    return _KEEP


def request_headers(
    headers: Collection[tuple[str, str]],
    drop: frozenset[str] = frozenset(),
    drop_prefixes: tuple[str, ...] = (),
) -> tuple[Headers, bool]:
    """The caller's headers as they go into the tunnel, and whether the request is an upgrade:
    :func:`is_upgrade` and :func:`forwardable_request_headers` together, less the names in
    ``drop`` and those starting with ``drop_prefixes`` (lower case; the authenticator's
    credential headers).

    One pass over the headers for the usual request, which has neither ``Connection`` nor
    ``Upgrade``: then nothing is an upgrade and no header is named hop-by-hop by another. A
    request with either takes the two-step way; both give the same answer.
    """
    configuration = (drop, drop_prefixes)
    verdicts = _VERDICTS.get(configuration)
    if verdicts is None:
        if len(_VERDICTS) >= _VERDICT_CONFIGURATIONS:
            _VERDICTS.clear()
        verdicts = _VERDICTS[configuration] = {}
    kept: list[tuple[str, str]] = []
    connection_or_upgrade = False
    for pair in headers:
        name = pair[0]
        verdict = verdicts.get(name)
        if verdict is None:
            verdict = _verdict(name, drop, drop_prefixes)
            if len(name) <= _VERDICT_NAME_LENGTH and len(verdicts) < _VERDICT_NAMES:
                verdicts[name] = verdict
        if verdict == _KEEP:
            kept.append(pair)
        elif verdict == _DROP_CONNECTION:
            connection_or_upgrade = True
    if not connection_or_upgrade:
        return tuple(kept), False
    upgrade = is_upgrade(headers)
    forwarded = forwardable_request_headers(headers, upgrade=upgrade)
    if drop or drop_prefixes:
        forwarded = tuple(
            (name, value)
            for name, value in forwarded
            if name.lower() not in drop and not name.lower().startswith(drop_prefixes)
        )
    return forwarded, upgrade


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    return {
        token.strip().lower()
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    }


def forwardable_request_headers(headers: Iterable[tuple[str, str]], *, upgrade: bool) -> Headers:
    """The caller's headers as they go into the tunnel (hub side)."""
    pairs = list(headers)
    lowered = [name.lower() for name, _ in pairs]
    # Headers a Connection header names are hop-by-hop too. This runs on every proxied
    # request and most have no Connection header, so the set is built only when there is one.
    named = _connection_tokens(pairs) - _UPGRADE_KEEP if "connection" in lowered else set()
    kept: list[tuple[str, str]] = []
    for pair, lower in zip(pairs, lowered, strict=True):
        if lower == "authorization" or lower.startswith(_CREDENTIAL_PREFIXES):
            continue
        if lower in named:
            continue
        if lower in HOP_BY_HOP and not (upgrade and lower in _UPGRADE_KEEP):
            continue
        kept.append(pair)
    if upgrade:
        kept = [(n, v) for n, v in kept if n.lower() != "connection"]
        kept.append(("Connection", "Upgrade"))
    return tuple(kept)


def forwardable_response_headers(
    headers: Iterable[tuple[str, str]], *, switching: bool = False
) -> Headers:
    """The child's response headers as they go back to the caller. A 101 keeps its
    ``Upgrade``/``Connection``; ``Content-Length`` is handled by the writer, not copied."""
    pairs = list(headers)
    lowered = [name.lower() for name, _ in pairs]
    named = _connection_tokens(pairs) - _UPGRADE_KEEP if "connection" in lowered else set()
    kept = _UPGRADE_KEEP if switching else frozenset()
    return tuple(
        pair
        for pair, lower in zip(pairs, lowered, strict=True)
        if lower not in named
        and lower != "content-length"
        and (lower not in HOP_BY_HOP or lower in kept)
    )


def content_length(headers: Iterable[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                length = int(value)
            except ValueError:
                return None
            return length if length >= 0 else None
    return None
