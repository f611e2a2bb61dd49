"""The hub's HPACK encoder: what it writes decodes (with hpack's own decoder, as a peer's
would) to exactly the fields given, and never changes the peer's dynamic table."""

from __future__ import annotations

import hpack
import pytest

from clusternet_aa.apiserver.http2_hpack import LiteralEncoder

FIELDS = [
    (b":status", b"200"),  # a whole static entry: one byte
    (b":status", b"404"),  # static entry too
    (b":status", b"422"),  # static name, literal value
    (b"content-type", b"application/json"),  # static name, index >= 15 (multi-octet prefix)
    (b"content-length", b"1024"),
    (b"audit-id", b"0c4a9d2e-6f3b-4d1a-9b8e-1f2a3b4c5d6e"),  # not in the static table
    (b"x-empty", b""),
    (b"x-long", b"v" * 300),  # a length over the 7-bit prefix
    (b"www-authenticate", b'Basic realm="kubernetes-master"'),
    (b"set-cookie", b"session=secret"),
]


def test_fields_round_trip_and_the_dynamic_table_stays_empty() -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    for _ in range(3):  # the name cache in use from the second block on
        block = encoder.encode(FIELDS)
        assert [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)] == FIELDS
        assert len(decoder.header_table.dynamic_entries) == 0
    assert encoder.encode([(b":status", b"200")]) == b"\x88"


def test_credentials_are_never_indexed() -> None:
    decoded = list(
        hpack.Decoder().decode(
            LiteralEncoder().encode([(b"set-cookie", b"a=1"), (b"x-a", b"1")]), raw=True
        )
    )
    assert isinstance(decoded[0], hpack.NeverIndexedHeaderTuple)
    assert not isinstance(decoded[1], hpack.NeverIndexedHeaderTuple)


def test_a_table_size_change_is_answered_with_an_update_to_zero() -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    # The peer lowered SETTINGS_HEADER_TABLE_SIZE: h2 sets it on the encoder.
    encoder.header_table_size = 0
    decoder.max_allowed_table_size = 0
    block = encoder.encode([(b":status", b"204")])
    assert block == b"\x20\x89"
    assert decoder.decode(block, raw=True) == [(b":status", b"204")]
    assert encoder.encode([(b":status", b"204")]) == b"\x89"  # once only


@pytest.mark.parametrize("count", [1, 2000])
def test_the_name_cache_is_bounded(count: int) -> None:
    encoder, decoder = LiteralEncoder(), hpack.Decoder()
    decoder.max_header_list_size = 1 << 20
    fields = [(f"x-n{i}".encode(), b"v") for i in range(count)]
    assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert len(encoder._names) <= 1024
