"""``/version``: the hub's build, in kube's ``version.Info`` shape.

The aggregator does not call it, but kubectl (``kubectl version`` against the hub directly) and
monitoring do, and kube serves it to anonymous callers; the field set is kube's so that clients
decoding ``version.Info`` find every key.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
from importlib import metadata
from typing import Any

from aiohttp import web

#: Reported when the package metadata cannot be read (running from a source tree).
FALLBACK_VERSION = "0.1.0"


@functools.cache
def package_version() -> str:
    """The installed package's version (read once: ``importlib.metadata`` scans sys.path)."""
    try:
        return metadata.version("clusternet-aa")
    except metadata.PackageNotFoundError:
        return FALLBACK_VERSION


def version_info() -> dict[str, Any]:
    version = package_version()
    parts = [*version.split(".")[:2], "0", "0"][:2]
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return {
        "major": parts[0],
        "minor": parts[1],
        "gitVersion": f"v{version}",
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{arch}",
    }


async def handle_version(request: web.Request) -> web.Response:
    response = web.Response(body=json.dumps(version_info()).encode())
    response.headers["Content-Type"] = "application/json"
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/version", handle_version)
    app.router.add_get("/version/", handle_version)
