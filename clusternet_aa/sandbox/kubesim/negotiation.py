"""Content negotiation: which representation a client's ``Accept`` header asks for.

kube-apiserver picks by media-type parameters, not just the type: ``application/json;as=Table;
v=v1;g=meta.k8s.io`` asks for a server-side printed Table and
``application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`` for aggregated discovery.
kubesim answers everything in JSON (kubectl and client-go accept JSON when they offered protobuf).
"""

from __future__ import annotations

from dataclasses import dataclass, field

JSON = "application/json"
TABLE_V1 = "application/json;as=Table;v=v1;g=meta.k8s.io"
AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str] = field(default_factory=dict)


def parse_accept(header: str) -> list[MediaRange]:
    """The media ranges of an Accept header, in the client's order."""
    ranges = []
    for item in header.split(","):
        pieces = [p.strip() for p in item.split(";")]
        if not pieces[0]:
            continue
        params = {}
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(pieces[0].lower(), params))
    return ranges


def _first_match(header: str, wanted: dict[str, set[str]]) -> MediaRange | None:
    """The first media range that is either the wanted special form or a plain one."""
    for media in parse_accept(header):
        if media.type not in (JSON, "application/*", "*/*"):
            continue
        if all(media.params.get(k) in v for k, v in wanted.items()):
            return media
        if "as" not in media.params:
            return None  # the client prefers the plain form
    return None


def wants_table(header: str) -> bool:
    """True when the client prefers a ``meta.k8s.io`` Table (kubectl get)."""
    return (
        _first_match(header, {"as": {"Table"}, "g": {"meta.k8s.io"}, "v": {"v1", "v1beta1"}})
        is not None
    )


def wants_aggregated_discovery(header: str) -> bool:
    """True when the client accepts ``apidiscovery.k8s.io/v2`` before plain JSON."""
    wanted = {"as": {"APIGroupDiscoveryList"}, "g": {"apidiscovery.k8s.io"}, "v": {"v2"}}
    for media in parse_accept(header):
        if media.type not in (JSON, "application/*", "*/*"):
            continue
        if all(media.params.get(k) in v for k, v in wanted.items()):
            return True
        if "as" not in media.params:
            return False
    return False
