"""Parsing of kube-style flag values shared by every command: durations and feature gates.

Each component's settings module re-exports :class:`SettingsError` and calls these, so the
three CLIs accept the same syntax and report the same messages as Kubernetes components do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from clusternet_aa.errors import ClusternetError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class SettingsError(ClusternetError):
    """The configuration is inconsistent; the message names the flag to fix."""


def parse_duration(text: str) -> float:
    """A Go duration (``3m``, ``20s``, ``1m30s``, ``500ms``) or plain seconds, in seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise SettingsError(f"invalid duration {text!r}")
    return total


def parse_feature_gates(text: str, known: Mapping[str, bool]) -> dict[str, bool]:
    """``A=true,B=false`` over the defaults; unknown gates and non-booleans are errors (as kube)."""
    gates = dict(known)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise SettingsError(f"missing bool value for {name}")
        if name not in known:
            raise SettingsError(f"unrecognized feature gate: {name}")
        lowered = value.strip().lower()
        if lowered not in ("true", "false"):
            raise SettingsError(f"invalid value of {name}={value.strip()}, err: invalid syntax")
        gates[name] = lowered == "true"
    return gates
