"""libFuzzer (atheris) harness over ``Connection.receive_message``.

Coverage-guided, so it finds its own way into the decoder and the stream state machine. Each
input is split into websocket messages (a 2-byte length before each); they are fed to a server
and a client Connection that have already exchanged HELLO and hold a few streams. Any exception
out of ``receive_message``, or a broken invariant, is a crash that libFuzzer reports and saves.

atheris is in the ``test`` extra on Linux x86_64 (its only wheel); elsewhere it needs clang with
libFuzzer to build. Run it with::

    python -m tests.security.fuzz_atheris -atheris_runs=1000000 -max_len=4096
    # or for a time: -max_total_time=120; add a corpus directory to keep what it finds
"""

from __future__ import annotations

import sys
from pathlib import Path

from clusternet_aa.tunnel.protocol import codec, events, frames
from clusternet_aa.tunnel.protocol.connection import Connection, Role
from clusternet_aa.tunnel.protocol.settings import Settings

SETTINGS = Settings(
    initial_stream_window=4096,
    session_window=16384,
    max_frame_size=1024,
    max_message_size=8192,
    max_concurrent_streams=16,
)
_HELLO = codec.encode(frames.Hello(Settings().to_wire()))


def _victims() -> list[Connection]:
    server = Connection(Role.SERVER, SETTINGS)
    server.receive_message(
        _HELLO + codec.encode(frames.Open(1, frames.HttpRequestHead("GET", "/")))
    )
    server.send_headers(1, 200)
    server.open_stream(frames.DialTarget("tcp", "127.0.0.1:1"))
    client = Connection(Role.CLIENT, SETTINGS)
    client.receive_message(_HELLO)
    client.open_stream(frames.HttpRequestHead("GET", "/"))
    for conn in (server, client):
        while conn.data_to_send():
            pass
    return [server, client]


def split_messages(data: bytes) -> list[bytes]:
    """Length-prefixed messages; what is left over is one last message."""
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < 64:
        size = int.from_bytes(data[pos : pos + 2], "big")
        out.append(data[pos + 2 : pos + 2 + size])
        pos += 2 + size
    if pos < len(data):
        out.append(data[pos:])
    return out


def test_one_input(data: bytes) -> None:
    messages = split_messages(data)
    for conn in _victims():
        for message in messages:
            was_closed = conn.closed
            out = conn.receive_message(message)
            if was_closed:
                assert out == [], "a closed session produced events"
            elif conn.closed:
                assert isinstance(out[-1], events.ConnectionTerminated)
            while conn.data_to_send():
                pass
            assert conn.control_backlog == 0


def seed_corpus() -> list[bytes]:
    """Valid messages, length-prefixed, for a corpus directory."""
    items: list[frames.Frame] = [
        frames.Open(3, frames.HttpRequestHead("GET", "/api", (("a", "b"),)), {"user": "u"}),
        frames.Data(1, b"abc"),
        frames.WindowUpdate(0, 100),
        frames.ResponseHeaders(2, 200, (("a", "b"),)),
        frames.End(1),
        frames.Reset(1, 7, "x"),
        frames.Ping(1),
        frames.GoAway(1, 0, "bye"),
    ]
    out = []
    for item in items:
        encoded = codec.encode(item)
        out.append(len(encoded).to_bytes(2, "big") + encoded)
    return out


def main() -> None:
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    # Empty corpus directories named on the command line start from valid messages.
    for arg in sys.argv[1:]:
        corpus = Path(arg)
        if not arg.startswith("-") and corpus.is_dir() and not any(corpus.iterdir()):
            for i, seed in enumerate(seed_corpus()):
                (corpus / f"seed-{i}").write_bytes(seed)
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
