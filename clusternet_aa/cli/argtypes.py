"""argparse ``type=`` converters shared by the three commands.

Kubernetes components spell flag values the Go way (``--leader-elect=false``,
``--shutdown-delay-duration=5s``); keeping one converter per kind means every command accepts
the same spellings and rejects bad ones with the same message.
"""

from __future__ import annotations

import argparse

from clusternet_aa.flags import SettingsError
from clusternet_aa.flags import parse_duration as _parse_duration

_TRUE = ("true", "1", "t", "yes")
_FALSE = ("false", "0", "f", "no")


def parse_bool(text: str) -> bool:
    """A Go-style boolean flag value (``true``, ``false``, ``1``, ``0``, ``t``, ``f``)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean {text!r}")


def parse_duration(text: str) -> float:
    """A Go duration flag value (``15s``, ``1m30s``, ``500ms``, or plain seconds), in seconds."""
    try:
        return _parse_duration(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
