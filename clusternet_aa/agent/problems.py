"""One clear log line per cause: the agent's answer to retry loops that would flood the log.

Every loop of the agent (registration, heartbeats, the deployer Secret) retries forever with
backoff. Logging each failed attempt at ERROR would bury the one line that says what is wrong,
and logging tracebacks would bury it deeper. A :class:`Problems` board remembers which cause is
current per loop: the first occurrence of a cause is logged at ERROR (with what to do about it),
repeats go to DEBUG, and the first success after it logs "recovered" at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from clusternet_aa.kube import errors


@dataclass
class Problems:
    """Current cause per topic (``registration``, ``status``...)."""

    logger: logging.Logger
    _current: dict[str, str] = field(default_factory=dict)

    def report(self, topic: str, cause: str, message: str) -> None:
        """A failure of ``topic`` because of ``cause`` (a short key); logs once per cause."""
        if self._current.get(topic) == cause:
            self.logger.debug("%s: still failing: %s", topic, message)
            return
        self._current[topic] = cause
        self.logger.error("%s: %s", topic, message)

    def resolved(self, topic: str) -> None:
        """``topic`` works again; logs once if it had been failing."""
        cause = self._current.pop(topic, None)
        if cause is not None:
            self.logger.info("%s: recovered (was: %s)", topic, cause)

    def current(self, topic: str) -> str | None:
        return self._current.get(topic)


def classify(exc: BaseException) -> str:
    """A short cause key for a Kubernetes error: the reason, not the text that varies."""
    if isinstance(exc, errors.APIError):
        return f"http-{exc.status}"
    if isinstance(exc, errors.APITransportError):
        return "unreachable"
    return type(exc).__name__


@dataclass
class Retry:
    """Exponential backoff with jitter between failed attempts of one loop, capped."""

    initial: float
    maximum: float = 60.0
    jitter: float = 0.3
    failures: int = 0

    def delay(self) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(0, self.failures - 1))
        return float(base * (1 + random.uniform(0, self.jitter)))

    async def failed(self) -> None:
        """Count a failure and sleep the backoff."""
        self.failures += 1
        await asyncio.sleep(self.delay())

    def succeeded(self) -> None:
        self.failures = 0
