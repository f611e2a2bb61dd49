"""``/healthz``, ``/livez`` and ``/readyz`` with named checks, in kube-apiserver's format.

Liveness asks "is the process alive" (restart me if not); readiness asks "can I serve right
now": the serving certificate is loaded, the parent answered (informers synced) and the server
is not shutting down. On SIGTERM readiness turns false first, so load balancers and the
aggregator stop sending before the listener closes.

Answers are kube's: ``ok`` when every check passes; otherwise 500 with one ``[+]name ok`` /
``[-]name failed: reason withheld`` line per check and ``<endpoint> check failed``. ``?verbose``
lists the checks on success too, ``?exclude=<name>`` skips one, ``/readyz/<name>`` runs one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from clusternet_aa.apiserver.status import StatusError

#: A check: None when healthy, else a short reason (logged on the server, withheld from clients).
Check = Callable[[], str | None]


@dataclass(frozen=True)
class NamedCheck:
    name: str
    check: Check


def ping() -> str | None:
    return None


class Health:
    """The checks of ``/healthz`` (= liveness, as kube keeps it), ``/livez`` and ``/readyz``."""

    def __init__(self) -> None:
        self.live: list[NamedCheck] = [NamedCheck("ping", ping)]
        self.ready: list[NamedCheck] = [NamedCheck("ping", ping)]
        self.shutting_down = False
        self.ready.append(NamedCheck("shutdown", self._shutdown))

    def _shutdown(self) -> str | None:
        return "the server is shutting down" if self.shutting_down else None

    def add_liveness(self, name: str, check: Check) -> None:
        self.live.append(NamedCheck(name, check))

    def add_readiness(self, name: str, check: Check) -> None:
        self.ready.append(NamedCheck(name, check))

    def is_ready(self) -> bool:
        return all(c.check() is None for c in self.ready)

    def add_routes(self, app: web.Application) -> None:
        for endpoint, checks in (
            ("healthz", self.live),
            ("livez", self.live),
            ("readyz", self.ready),
        ):
            handler = _handler(endpoint, checks)
            app.router.add_get(f"/{endpoint}", handler)
            app.router.add_get(f"/{endpoint}/{{check}}", handler)


def _text(body: str, status: int = 200) -> web.Response:
    response = web.Response(text=body, status=status, content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _handler(
    endpoint: str, checks: list[NamedCheck]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        only = request.match_info.get("check")
        excluded = set(request.query.getall("exclude", []))
        selected = [c for c in checks if c.name not in excluded]
        if only is not None:
            selected = [c for c in checks if c.name == only]
            if not selected:
                raise StatusError(404, "the server could not find the requested resource")
            failure = selected[0].check()
            if failure is None:
                return _text("ok")
            return _text(f"internal server error: {only} failed: reason withheld\n", 500)
        lines: list[str] = []
        failed = False
        for check in selected:
            problem = check.check()
            if problem is None:
                lines.append(f"[+]{check.name} ok")
            else:
                failed = True
                lines.append(f"[-]{check.name} failed: reason withheld")
        for name in sorted(excluded):
            lines.append(f"[+]{name} excluded: ok")
        if failed:
            return _text("\n".join([*lines, f"{endpoint} check failed"]) + "\n", 500)
        if "verbose" in request.query:
            return _text("\n".join([*lines, f"{endpoint} check passed"]) + "\n")
        return _text("ok")

    return handle
