"""The hidden keepalive flags of ``clusternet-hub`` and ``clusternet-agent``."""

from __future__ import annotations

import pytest

from clusternet_aa.agent.settings import SettingsError as AgentSettingsError
from clusternet_aa.cli import agent as agent_cli
from clusternet_aa.cli import hub as hub_cli
from clusternet_aa.hub.settings import SettingsError as HubSettingsError


def test_hub_flags_reach_the_settings_and_stay_out_of_help() -> None:
    parser = hub_cli.build_parser()
    settings = hub_cli.settings_from_args(
        parser.parse_args(["--tunnel-keepalive-interval=0.3", "--tunnel-keepalive-misses=2"])
    )
    assert settings.tunnel_keepalive_interval == 0.3
    assert settings.tunnel_keepalive_misses == 2
    defaults = hub_cli.settings_from_args(parser.parse_args([]))
    assert (defaults.tunnel_keepalive_interval, defaults.tunnel_keepalive_misses) == (15.0, 3)
    assert "keepalive" not in parser.format_help()
    with pytest.raises(HubSettingsError, match="--tunnel-keepalive-interval"):
        hub_cli.settings_from_args(parser.parse_args(["--tunnel-keepalive-interval=0"]))
    with pytest.raises(HubSettingsError, match="--tunnel-keepalive-misses"):
        hub_cli.settings_from_args(parser.parse_args(["--tunnel-keepalive-misses=0"]))


def test_hub_durations_are_go_durations_like_the_agents() -> None:
    """Both commands spell durations the Kubernetes way; plain seconds still work."""
    parser = hub_cli.build_parser()
    args = parser.parse_args(
        ["--tunnel-keepalive-interval=300ms", "--shutdown-delay-duration=1m5s"]
    )
    settings = hub_cli.settings_from_args(args)
    assert settings.tunnel_keepalive_interval == pytest.approx(0.3)
    assert settings.shutdown_delay_seconds == 65.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--tunnel-keepalive-interval=15 parsecs"])


AGENT_ARGS = [
    "--cluster-reg-parent-url=https://127.0.0.1:6443",
    "--cluster-reg-token=abcdef.0123456789abcdef",
]


def test_agent_flags_reach_the_settings_and_stay_out_of_help() -> None:
    parser = agent_cli.build_parser()
    settings = agent_cli.settings_from_args(
        parser.parse_args(
            [*AGENT_ARGS, "--tunnel-keepalive-interval=300ms", "--tunnel-keepalive-misses=4"]
        )
    )
    assert settings.tunnel_keepalive_interval == pytest.approx(0.3)
    assert settings.tunnel_keepalive_misses == 4
    defaults = agent_cli.settings_from_args(parser.parse_args(AGENT_ARGS))
    assert (defaults.tunnel_keepalive_interval, defaults.tunnel_keepalive_misses) == (15.0, 3)
    assert "keepalive" not in parser.format_help()
    with pytest.raises(AgentSettingsError, match="--tunnel-keepalive-misses"):
        agent_cli.settings_from_args(
            parser.parse_args([*AGENT_ARGS, "--tunnel-keepalive-misses=0"])
        )


# That the hub and the agents use these values on the wire is what test_freeze.py measures.
