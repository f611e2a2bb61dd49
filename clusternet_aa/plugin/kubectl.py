"""Running kubectl for the plugin: the binary, the user's global flags, one-line errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusternet_aa.errors import ClusternetError
from clusternet_aa.plugin.logs import event


class PluginError(ClusternetError):
    """Something the user must fix; the message is one line."""


class KubectlError(PluginError):
    def __init__(self, message: str, *, reason: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.stderr = stderr


_SERVER_ERROR = re.compile(r"^Error from server \((?P<reason>\w+)\): (?P<message>.*)$")


def one_line(stderr: str) -> tuple[str, str]:
    """(reason, message) from kubectl's stderr: the last error line, without its prefix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "unable"))]
    line = (errors or lines or ["kubectl failed"])[-1]
    match = _SERVER_ERROR.match(line)
    if match:
        return match["reason"], match["message"]
    return "", re.sub(r"^error: ", "", line, flags=re.IGNORECASE)


def find_kubectl() -> str:
    """``$KUBECTL``, else kubectl on PATH, else the one next to this Python (the venv's)."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    found = shutil.which("kubectl") or shutil.which(
        "kubectl", path=str(Path(sys.executable).parent)
    )
    if not found:
        raise PluginError("kubectl not found on PATH (set KUBECTL to its path)")
    return found


@dataclass(frozen=True)
class Kubectl:
    """kubectl with the user's ``--kubeconfig`` and ``--context``."""

    kubeconfig: str | None = None
    context: str | None = None
    binary: str = field(default_factory=find_kubectl)
    timeout: float = 60.0

    def global_flags(self) -> list[str]:
        flags = []
        if self.kubeconfig:
            flags.append(f"--kubeconfig={self.kubeconfig}")
        if self.context:
            flags.append(f"--context={self.context}")
        return flags

    async def run(self, *args: str) -> str:
        argv = [self.binary, *self.global_flags(), *args]
        event(logging.DEBUG, "running kubectl", args=" ".join(args))
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise PluginError(f"cannot run {self.binary}: {exc.strerror}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise PluginError(f"kubectl {args[0]} took longer than {self.timeout:.0f}s") from None
        if process.returncode != 0:
            reason, message = one_line(err.decode(errors="replace"))
            raise KubectlError(message, reason=reason, stderr=err.decode(errors="replace"))
        return out.decode()

    async def json(self, *args: str) -> Any:
        text = await self.run(*args, "-o", "json")
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PluginError(f"kubectl {args[0]} returned no JSON: {exc}") from exc
