"""``metav1.Status`` errors for the hub's API server, and the middleware that renders them.

Every error the hub returns is a Status body with a reason and a code, as kube-apiserver's,
so kubectl prints ``Error from server (<Reason>): <message>``. Raise :class:`StatusError` (or a
subclass via the helpers) anywhere under a handler; the middleware renders it. An unexpected
exception becomes a 500 InternalError Status and is logged, never a traceback to the client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from clusternet_aa.errors import ClusternetError

logger = logging.getLogger(__name__)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class StatusError(ClusternetError):
    """An error the client sees as a ``metav1.Status`` with this code and reason."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = dict(details) if details else None
        self.headers = dict(headers or {})

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            status["details"] = self.details
        return status

    def to_response(self) -> web.Response:
        return status_response(self.to_status(), self.code, self.headers)


def status_response(
    body: Mapping[str, Any], code: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=code,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def forbidden(message: str, **details: Any) -> StatusError:
    return StatusError(403, message, details=details or None)


def not_found(message: str, **details: Any) -> StatusError:
    return StatusError(404, message, details=details or None)


def unavailable(message: str, **details: Any) -> StatusError:
    return StatusError(503, message, details=details or None)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(request: web.BaseRequest, exc: Exception) -> web.Response:
    """The Status an exception escaping a handler becomes. One function for every middleware
    that sits at the API server's edge (:func:`status_middleware`, and the hub's combined
    status-and-authentication middleware), so they cannot answer differently."""
    if isinstance(exc, StatusError):
        return exc.to_response()
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:  # never send a redirect: an aggregator would not follow it
            return StatusError(500, f"unexpected redirect to {exc.location}").to_response()  # type: ignore[attr-defined]
        return StatusError(exc.status, exc.reason or exc.text or "error").to_response()
    # The edge of the API server: every failure becomes a Status.
    logger.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return StatusError(500, "internal error").to_response()


def checked_response(response: web.StreamResponse) -> web.StreamResponse:
    """``response``, unless it is a redirect: a handler must never send one."""
    if 300 <= response.status < 400:
        return StatusError(500, "handler attempted a redirect").to_response()
    return response


@web.middleware
async def status_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render :class:`StatusError` and aiohttp's own HTTP errors as Status bodies; never 3xx."""
    try:
        response = await handler(request)
    except Exception as exc:  # noqa: BLE001 - the edge: error_response logs the unexpected
        return error_response(request, exc)
    return checked_response(response)
