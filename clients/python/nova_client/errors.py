"""Exceptions raised by the Nova client and the handler-side signals of the Worker."""

from __future__ import annotations

import email.message
import email.utils
import json
import time
from typing import Any, Mapping, Optional, Union

Headers = Optional[Union[Mapping[str, str], email.message.Message]]

__all__ = [
    "NovaError",
    "NovaConnectionError",
    "NovaTimeout",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "LeaseLost",
    "PayloadTooLarge",
    "Unprocessable",
    "RateLimited",
    "ServerError",
    "Unavailable",
    "PermanentError",
    "RetryLater",
    "error_from_response",
]


class NovaError(Exception):
    """Base of every error the client raises.

    ``status`` is the HTTP status (0 when no response came back), ``code`` the machine-readable
    error code of the body (``{"error": {"code": ..., "message": ...}}``), ``message`` its text.
    """

    status: int
    code: str
    message: str

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        if self.status:
            return f"{self.status} {self.code}: {self.message}"
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class NovaConnectionError(NovaError, ConnectionError):
    """The server could not be reached, or the connection failed before a response was read."""

    def __init__(self, message: str, code: str = "connection_failed") -> None:
        super().__init__(0, code, message)


class NovaTimeout(NovaError, TimeoutError):
    """``Client.wait`` gave up: the job did not reach a terminal state in time."""

    def __init__(self, message: str, code: str = "timeout") -> None:
        super().__init__(0, code, message)


class BadRequest(NovaError):
    """400: the request could not be parsed (malformed JSON, unknown field...)."""


class Unauthorized(NovaError):
    """401: missing, malformed or unknown token."""


class Forbidden(NovaError):
    """403: the token's role (or the policy) does not allow the action."""


class NotFound(NovaError):
    """404: no such job (or route)."""


class Conflict(NovaError):
    """409: the job's state does not allow the action (or an idempotency-key conflict)."""


class LeaseLost(Conflict):
    """409 ``lease_lost``: the lease is stale, expired, or belongs to another job."""


class PayloadTooLarge(NovaError):
    """413: the body or payload is over the server's limit."""


class Unprocessable(NovaError):
    """422: well-formed but invalid input (unknown job kind, out-of-range value...)."""


class RateLimited(NovaError):
    """429: too many requests (or failed attempts); ``retry_after`` seconds, when the server said."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


class ServerError(NovaError):
    """5xx: the server failed."""


class Unavailable(ServerError):
    """503: the server (or its store) is unavailable for now; ``retry_after`` seconds, when said."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after


# -- Signals a Worker handler may raise ------------------------------------------------------------


class PermanentError(Exception):
    """Raised by a handler: the job failed and must not be retried (it goes dead at once)."""


class RetryLater(Exception):
    """Raised by a handler: fail this attempt and run the job again after ``seconds``."""

    def __init__(self, seconds: float, message: str | None = None) -> None:
        super().__init__(message or f"retry in {seconds:g} s")
        self.seconds = float(seconds)


# -- Mapping responses to exceptions ---------------------------------------------------------------

_BY_STATUS: dict[int, type[NovaError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: Unprocessable,
}


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_from_response(status: int, body: bytes, headers: Headers = None) -> NovaError:
    """The exception for a non-2xx response: its class by status (and code), its fields from the body."""
    code = f"http_{status}"
    message = ""
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or "")
    elif body:
        message = body.decode("utf-8", "replace").strip()[:500]
    retry_after = _retry_after(_header(headers, "Retry-After"))
    if status == 429:
        return RateLimited(status, code, message, retry_after)
    if status == 503:
        return Unavailable(status, code, message, retry_after)
    if status >= 500:
        return ServerError(status, code, message)
    if status == 409 and code == "lease_lost":
        return LeaseLost(status, code, message)
    return _BY_STATUS.get(status, NovaError)(status, code, message)


def _header(headers: Headers, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return str(candidate)
        return None
    return str(value)
