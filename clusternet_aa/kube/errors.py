"""Errors from a Kubernetes API server, as a tree split by status (after kopf's ``errors.py``).

Callers branch on what happened, not on HTTP numbers: ``except errors.APINotFound`` reads better
than ``if e.status == 404`` and survives a change of client library. Every error from the parent
or a child cluster crosses into the project through :func:`from_response` or
:func:`map_api_exceptions`, so nothing above ``kube/`` sees a ``kubernetes_asyncio`` exception.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from clusternet_aa.errors import ClusternetError

#: Non-Status bodies are cut to this many characters before they reach a message or a log.
TEXT_ERROR_MAX_SIZE = 1024


class KubeError(ClusternetError):
    """Anything that went wrong talking to an API server."""


class APITransportError(KubeError):
    """No HTTP answer at all: connection refused, TLS failure, timeout, broken stream."""


class APIError(KubeError):
    """An API server answered with an error status (a ``metav1.Status`` when it could)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"({status} {reason or 'Unknown'}) {message}")
        self.status = status
        self.message = message
        self.reason = reason
        self.details: Mapping[str, Any] = details or {}


class APIClientError(APIError):
    """4xx: the request was wrong or not allowed; retrying the same request will not help."""


class APIServerError(APIError):
    """5xx: the server failed; a later retry may succeed."""


class APIUnauthorized(APIClientError):
    """401: our credentials were not accepted."""


class APIForbidden(APIClientError):
    """403: authenticated, but RBAC (or admission) said no."""


class APINotFound(APIClientError):
    """404: no such object, or no such resource type (a CRD not installed yet)."""


class APIConflict(APIClientError):
    """409: already exists, or a resourceVersion conflict."""


class APIGone(APIClientError):
    """410 Expired: the resourceVersion is too old; a watch must relist."""


class APIInvalid(APIClientError):
    """422: the object failed validation."""


class APITooManyRequests(APIClientError):
    """429: throttled (API priority and fairness); retry after a pause."""


_BY_STATUS: dict[int, type[APIError]] = {
    401: APIUnauthorized,
    403: APIForbidden,
    404: APINotFound,
    409: APIConflict,
    410: APIGone,
    422: APIInvalid,
    429: APITooManyRequests,
}


def _truncate(text: str) -> str:
    if len(text) <= TEXT_ERROR_MAX_SIZE:
        return text
    return text[:TEXT_ERROR_MAX_SIZE] + "..."


def from_status(status: Mapping[str, Any], *, http_status: int = 0) -> APIError:
    """An error from a decoded ``metav1.Status`` (as in a watch ERROR event)."""
    code = status.get("code")
    code = code if isinstance(code, int) and code else http_status or 500
    reason = status.get("reason")
    message = status.get("message")
    details = status.get("details")
    cls = _BY_STATUS.get(code) or (APIServerError if code >= 500 else APIClientError)
    return cls(
        code,
        _truncate(message if isinstance(message, str) else ""),
        reason=reason if isinstance(reason, str) else "",
        details=details if isinstance(details, Mapping) else None,
    )


def from_response(http_status: int, body: bytes | str | None) -> APIError:
    """An error from an HTTP error answer: its Status body if it has one, else its text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body or ""
    try:
        decoded = json.loads(text) if text else None
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping) and decoded.get("kind") == "Status":
        return from_status(decoded, http_status=http_status)
    cls = _BY_STATUS.get(http_status) or (APIServerError if http_status >= 500 else APIClientError)
    return cls(http_status, _truncate(text.strip()) or f"HTTP {http_status}")


@contextlib.contextmanager
def map_api_exceptions() -> Iterator[None]:
    """Re-raise ``kubernetes_asyncio`` and aiohttp failures as :class:`KubeError` subclasses."""
    try:
        yield
    except ApiException as exc:
        if not exc.status:  # the library's own "could not even send it" errors
            raise APITransportError(str(exc.reason)) from exc
        raise from_response(exc.status, exc.body) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise APITransportError(f"{type(exc).__name__}: {exc}") from exc
