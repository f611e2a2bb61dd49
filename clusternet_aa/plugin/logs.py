"""Structured logs for the plugin: one line per event on stderr, logfmt or JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

log = logging.getLogger("clusternet_aa.plugin")
T = TypeVar("T")


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@" for c in text):
        return text
    return json.dumps(text)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"level": record.levelname.lower(), "msg": record.getMessage()}
        fields.update(getattr(record, "fields", {}))
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        return json.dumps(entry)


def configure(log_format: str, verbosity: int) -> None:
    """Warnings only by default (a plugin's stdout is its answer); -v 1 info, -v 4 debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    log.handlers[:] = [handler]
    log.propagate = False
    level = logging.DEBUG if verbosity >= 4 else logging.INFO if verbosity >= 1 else logging.WARNING
    log.setLevel(level)


def event(level: int, msg: str, **fields: Any) -> None:
    log.log(level, msg, extra={"fields": fields})


async def gather_with_progress(
    what: str, awaitables: Iterable[Awaitable[T]], *, every: float = 2.0
) -> list[T]:
    """``asyncio.gather`` that reports progress (always logged, at warning level so that it shows
    by default) while the wait lasts longer than ``every`` seconds."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    start = time.monotonic()
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=every)
        if pending:
            event(
                logging.WARNING,
                f"still waiting for {what}",
                done=len(tasks) - len(pending),
                total=len(tasks),
                elapsed=f"{time.monotonic() - start:.0f}s",
            )
    return [t.result() for t in tasks]
