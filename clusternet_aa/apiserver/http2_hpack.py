"""HPACK for the hub's HTTP/2 connections: a response encoder that writes literals only, and a
request decoder that remembers the header blocks a client repeats.

Decoding (:class:`CachingDecoder`): a client that sends the same request again (kubectl's
polls, the aggregator's proxied calls, the benchmark) has all its fields in the dynamic table
after the first request, so its header block is the same few indexed bytes every time;
hpack's pure-Python decoder still spent about a sixth of the hub's HTTP/2 CPU per request
turning them back into the same list. A block whose decoding left the table unchanged is a
pure function of its bytes, the table and the two limits, so its result is kept and handed
out again while none of those changed.

Encoding (:class:`LiteralEncoder`):

Why: ``hpack.Encoder`` searches the static table and then the dynamic table linearly for every
field, in Python, and Huffman-codes each literal; for the proxied small GET that was the
largest part of sending a response head. The hub's response heads are a few hundred bytes on
loopback or a LAN, and the peer (the aggregator, client-go) decodes literals as cheaply as
indexed fields, so this encoder trades those bytes for CPU:

* a field equal to a static-table entry (``:status: 200``) is one indexed byte;
* every other field is a literal *without indexing* (never indexed for credentials), its name
  by static-table index when there is one, its value as raw octets (no Huffman);
* the dynamic table is never written, so the peer's decoder state never changes and the
  encoding of a name can be kept and reused (bounded, cleared when full).

HPACK (RFC 7541 4.2) still requires a dynamic table size update at the start of the first
block after the peer changes SETTINGS_HEADER_TABLE_SIZE; this encoder answers any change with
an update to size 0, which is within every limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hpack
from hpack.hpack import DEFAULT_MAX_HEADER_LIST_SIZE, encode_integer
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable

#: Names whose values must not be indexed by anyone on the way (RFC 7541 7.1.3), as h2's
#: own outbound normalisation marks them.
_SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})

#: (name, value) -> the one-byte indexed representation, for every static-table entry (all
#: 61 indices fit the 7-bit prefix).
_STATIC_FIELDS: dict[tuple[bytes, bytes], bytes] = {}
#: name -> its first static-table index.
_STATIC_NAMES: dict[bytes, int] = {}
for _index, _field in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault(_field, bytes((0x80 | _index,)))
    _STATIC_NAMES.setdefault(_field[0], _index)

_NAMES_MAX = 1024
#: A dynamic table size update to 0 (001 prefix, 5-bit integer 0).
_SIZE_ZERO = b"\x20"


#: The one-octet length prefixes (H bit clear) of strings shorter than 127 octets.
SHORT_LENGTHS = [bytes((size,)) for size in range(127)]


def _length(data: bytes) -> bytes:
    """An HPACK string's length prefix (H bit clear: raw octets)."""
    size = len(data)
    return bytes((size,)) if size < 127 else bytes(encode_integer(size, 7))


def _name_prefix(name: bytes) -> bytes:
    """The representation's first octets up to the value: literal without indexing (0000)
    or never indexed (0001), the name by static index (4-bit prefix) or as a literal."""
    flag = 0x10 if name in _SENSITIVE else 0x00
    index = _STATIC_NAMES.get(name)
    if index is not None:
        encoded = encode_integer(index, 4)
        encoded[0] |= flag
        return bytes(encoded)
    return bytes((flag,)) + _length(name) + name


#: Names with a static-table entry that has a value: a field of one may be a full match.
_VALUED_NAMES = frozenset(name for name, value in HeaderTable.STATIC_TABLE if value)


def literal_prefix(name: bytes) -> bytes | None:
    """What :meth:`LiteralEncoder.encode` writes before a field's value for ``name`` (lower
    case), or None when a field of that name may be a static-table entry (then it is encoded
    with :func:`encode_field`, which looks the pair up)."""
    return None if name in _VALUED_NAMES else _name_prefix(name)


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field as :meth:`LiteralEncoder.encode` writes it."""
    indexed = _STATIC_FIELDS.get((name, value))
    if indexed is not None:
        return indexed
    return _name_prefix(name) + _length(value) + value


def length_prefix(size: int) -> bytes:
    """A raw string's length prefix (as :func:`_length`, from the size)."""
    return SHORT_LENGTHS[size] if size < 127 else bytes(encode_integer(size, 7))


class LiteralEncoder(hpack.Encoder):
    """An ``hpack.Encoder`` (what h2 expects) that never touches the dynamic table."""

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[bytes, bytes] = {}

    def size_update(self) -> bytes:
        """The table size update owed at the start of the next block (once), else b"": a block
        built outside :meth:`encode` (see ``Http2Stream._finish``) starts with this."""
        if self.table_size_changes:
            self.table_size_changes.clear()
            return _SIZE_ZERO
        return b""

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        """``headers``: (name, value) pairs of bytes, names lower case (h2 passes them as the
        hub built them). ``huffman`` is ignored: literals are raw."""
        out: list[bytes] = []
        if self.table_size_changes:
            self.table_size_changes.clear()
            out.append(_SIZE_ZERO)
        names = self._names
        static = _STATIC_FIELDS
        lengths = SHORT_LENGTHS
        append = out.append
        # Inlined (no call per field): a response's 6-10 fields are encoded per request.
        for name, value in headers:
            indexed = static.get((name, value))
            if indexed is not None:
                append(indexed)
                continue
            prefix = names.get(name)
            if prefix is None:
                prefix = _name_prefix(name)
                if len(names) >= _NAMES_MAX:
                    names.clear()
                names[name] = prefix
            append(prefix)
            size = len(value)
            append(lengths[size] if size < 127 else _length(value))
            append(value)
        return b"".join(out)


class _CountingTable(HeaderTable):
    """hpack's dynamic table, counting its changes: a cached decoding is valid only for the
    table state it was made with."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


#: Distinct header blocks remembered per connection (cleared when full, so junk cannot pin
#: memory), and the largest block remembered.
_BLOCKS_MAX = 64
_BLOCK_MAX_LENGTH = 2048


class CachingDecoder(hpack.Decoder):
    """``hpack.Decoder`` (what h2 calls) that returns a repeated block's headers from a cache.

    Exactly the same result and errors as hpack: a cached entry is used only when the block's
    bytes, the table's change count and both limits (``max_header_list_size``,
    ``max_allowed_table_size``) are those it was decoded under, and only blocks whose decoding
    did not change the table are kept (one that adds entries means something else next time).
    A block that failed to decode is never kept. Each call returns a new list (h2 hangs it
    off its event).
    """

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _CountingTable()
        self._blocks: dict[bytes, tuple[tuple[int, int, int], list[HeaderTuple]]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[Any]:
        table = self.header_table
        assert isinstance(table, _CountingTable)
        state = (table.changes, self.max_header_list_size, self.max_allowed_table_size)
        key = bytes(data)
        entry = self._blocks.get(key) if raw else None
        if entry is not None and entry[0] == state:
            return list(entry[1])
        headers = super().decode(data, raw)
        if raw and table.changes == state[0] and len(key) <= _BLOCK_MAX_LENGTH:
            blocks = self._blocks
            if len(blocks) >= _BLOCKS_MAX:
                blocks.clear()
            blocks[key] = (state, list(headers))
        return headers
