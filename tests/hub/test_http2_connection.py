"""The hub's h2 connection (``_Connection``): the open-stream count made cheap must keep
h2's limit check exactly, and still forget closed streams (memory).

Sans-IO: a client ``H2Connection`` and the server side exchange bytes directly; the same
client bytes go to a stock ``H2Connection`` and to ``_Connection``, whose answers must match.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from clusternet_aa.apiserver.http2_connection import CountingH2Connection as _Connection

HEAD = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"hub"), (b":path", b"/")]


class Pair:
    def __init__(self, server_class: type[h2.connection.H2Connection], limit: int) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = server_class(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.local_settings = h2.settings.Settings(
            client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: limit}
        )
        self.server.initiate_connection()
        self.client.initiate_connection()
        self.server.receive_data(self.client.data_to_send())
        self.client.receive_data(self.server.data_to_send())
        self.server.receive_data(self.client.data_to_send())  # the client's SETTINGS ack
        # The client opens streams beyond the limit on purpose (a misbehaving peer).
        self.client.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS] = 1 << 20
        self.client.remote_settings.acknowledge()

    def request(self) -> tuple[int, str]:
        """One request; what the server made of it."""
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, HEAD, end_stream=True)
        try:
            events = self.server.receive_data(self.client.data_to_send())
        except h2.exceptions.TooManyStreamsError:
            return stream_id, "too many streams"
        assert any(isinstance(e, h2.events.RequestReceived) for e in events)
        return stream_id, "received"

    def answer(self, stream_id: int) -> None:
        self.server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        self.server.data_to_send()


@pytest.mark.parametrize("finished_first", [0, 10, 500])
def test_the_limit_is_enforced_exactly_as_h2_does(finished_first: int) -> None:
    """``finished_first`` streams answered and closed, then streams left open up to the
    limit and one past it: the same outcome, request by request, as stock h2."""
    outcomes: dict[str, list[str]] = {}
    for name, server_class in (("h2", h2.connection.H2Connection), ("hub", _Connection)):
        pair = Pair(server_class, limit=100)
        for _ in range(finished_first):
            stream_id, outcome = pair.request()
            assert outcome == "received"
            pair.answer(stream_id)
        outcomes[name] = [pair.request()[1] for _ in range(101)]
    assert outcomes["hub"] == outcomes["h2"]
    assert outcomes["hub"] == ["received"] * 100 + ["too many streams"]


def test_closed_streams_are_forgotten() -> None:
    """A long-lived connection (an aggregator's) serving many short requests beside 200 open
    watches: h2's stream table stays near the open streams, not the requests served."""
    pair = Pair(_Connection, limit=1000)
    for _ in range(200):
        assert pair.request()[1] == "received"  # watches, never answered
    for _ in range(5000):
        stream_id, outcome = pair.request()
        assert outcome == "received"
        pair.answer(stream_id)
    assert len(pair.server.streams) <= 200 + 200 // 4 + 64 + 1
    # The count is an upper bound between walks; h2's exact one still says 200.
    assert pair.server.open_inbound_streams >= 200
    server = pair.server
    assert isinstance(server, _Connection)
    assert super(_Connection, server).open_inbound_streams == 200
