"""Exceptions raised by :class:`metamesh.Client`.

Every error the node's API answers is JSON ``{"error": "...", "field": "..."}``
with a 4xx/5xx status; it becomes an :class:`ApiError` (or the subclass for
its status) carrying ``status``, ``message`` and ``field`` — the body field
(``quality_achieved``, ``[3].quality_achieved`` in a batch), query parameter
(``atp``, ``scope``) or ``body`` the node complains about, or ``None``.
"""

from __future__ import annotations

from typing import Optional


class MetameshError(Exception):
    """Base class of every error this package raises."""


class NodeUnreachable(MetameshError):
    """The node could not be reached (refused, timed out, connection lost)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the metamesh node at {url}: {reason}")
        self.url = url
        self.reason = reason


class InvalidPattern(MetameshError, ValueError):
    """A pattern the client refuses to send (checked before any request).

    ``field`` names the offending field, as the API would.
    """

    def __init__(self, message: str, field: Optional[str]):
        super().__init__(message)
        self.message = message
        self.field = field


class ApiError(MetameshError):
    """The node answered with an error status."""

    def __init__(self, status: int, message: str, field: Optional[str] = None):
        text = f"HTTP {status}: {message}"
        super().__init__(text)
        self.status = status
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, "
            f"message={self.message!r}, field={self.field!r})"
        )


class BadRequest(ApiError):
    """400: malformed request (bad JSON, unknown or invalid query parameter)."""


class Forbidden(ApiError):
    """403: a cross-origin write (``field`` = ``origin``)."""


class NotFound(ApiError):
    """404: no such route (or the node does not serve it)."""


class MethodNotAllowed(ApiError):
    """405."""


class RequestTimeout(ApiError):
    """408: a request body that stalled."""


class PayloadTooLarge(ApiError):
    """413: body over 1 MiB or more than 1000 patterns in one request."""


class UnsupportedMediaType(ApiError):
    """415: a write without a JSON content type."""


class MisdirectedRequest(ApiError):
    """421: the ``Host`` header does not name the node's API (``field`` = ``host``)."""


class Unprocessable(ApiError):
    """422: a pattern that parses but is invalid; ``field`` names the field."""


class NotImplementedByNode(ApiError):
    """501: the node does not provide this report."""


class Unavailable(ApiError):
    """503: the node cannot answer now; nothing was stored."""


class ServerError(ApiError):
    """Another 5xx status."""


_BY_STATUS = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    408: RequestTimeout,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    421: MisdirectedRequest,
    422: Unprocessable,
    501: NotImplementedByNode,
    503: Unavailable,
}


def error_for(status: int, message: str, field: Optional[str]) -> ApiError:
    """The exception for an error answer."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ApiError
    return cls(status, message, field)
