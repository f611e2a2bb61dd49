"""docs/tunnel.md's example bytes are what the codec really writes."""

from __future__ import annotations

import re
from pathlib import Path

from clusternet_aa.tunnel.protocol import codec, frames

DOC = Path(__file__).resolve().parents[2] / "docs" / "tunnel.md"


def _doc_bytes(line_start: str) -> bytes:
    line = next(li for li in DOC.read_text().splitlines() if li.startswith(line_start))
    out = bytearray()
    for token in re.findall(r'"[^"]*"|[0-9a-f]{2}', line):
        out += token.strip('"').encode() if token.startswith('"') else bytes.fromhex(token)
    return bytes(out)


def test_open_example_matches_the_codec() -> None:
    frame = frames.Open(2, frames.HttpRequestHead("GET", "/version"), {})
    assert _doc_bytes("95 01 02") == codec.encode(frame)


def test_data_example_matches_the_codec() -> None:
    text = DOC.read_text()
    assert "`93 03 02 c4 02 68 69`" in text
    assert codec.encode(frames.Data(2, b"hi")).hex(" ") == "93 03 02 c4 02 68 69"
    assert codec.encode_data(2, b"hi") == codec.encode(frames.Data(2, b"hi"))
