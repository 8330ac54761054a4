"""One error hierarchy for the whole pack: status, machine-readable code, safe message, optional headers.

The status decides redelivery: a 4xx is poison (never retried), a 5xx or 429 is transient (the broker
retries). Every HTTP error body is `{"error": code, "message": text}` and never carries exception text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

import redis.exceptions
from starlette.responses import JSONResponse

T = TypeVar("T")


class Eco2Error(Exception):
    """Base of every error the pack raises on purpose. `code` is machine-readable, `message` safe to show."""

    status = 500
    code = "internal"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.message = message or self.code
        self.headers = dict(headers or {})
        super().__init__(self.message)

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        # Each kind of error names its default status and code in its class line.
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class PoisonEvent(Eco2Error, status=422, code="invalid_event"):
    """The event can never succeed (undecodable, missing attributes, invalid data): 422, not retried."""


class BadRequest(PoisonEvent, status=400, code="bad_request"):
    """The request is malformed (not a CloudEvent, not JSON, a bad header): 400."""


class PayloadTooLarge(BadRequest, status=413, code="body_too_large"):
    pass


class NotFound(Eco2Error, status=404, code="not_found"):
    pass


class Conflict(Eco2Error, status=409, code="conflict"):
    pass


class TransientError(Eco2Error, status=503, code="unavailable"):
    """A dependency failed in a way a later retry may fix (Redis, model 5xx, timeout): 503, retried."""


class StoreUnavailable(TransientError, code="store_unavailable"):
    pass


class ModelUnavailable(TransientError, code="model_unavailable"):
    pass


class RateLimited(TransientError, status=429, code="rate_limited"):
    """Too many requests (ours, or the model's): 429 with Retry-After, retried."""

    def __init__(self, message: str = "", retry_after: float = 1.0, *, code: str | None = None) -> None:
        super().__init__(code, message, headers={"Retry-After": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


def error_response(error: Eco2Error) -> JSONResponse:
    """The one way an error becomes an HTTP answer."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


def internal_error() -> JSONResponse:
    """The answer to a crash: logged by the caller, its text never sent."""
    return error_response(Eco2Error("internal", "internal error"))


# Redis errors a retry can fix: the server is unreachable, loading, or too slow to answer.
REDIS_TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError)


async def store_call(awaitable: Awaitable[T]) -> T:
    """Await a Redis call; an unreachable or stalled Redis becomes StoreUnavailable (503, retried)."""
    try:
        return await awaitable
    except REDIS_TRANSIENT as exc:
        raise StoreUnavailable(message="the job store is unreachable") from exc
