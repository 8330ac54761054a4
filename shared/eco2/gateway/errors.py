"""The gateway's error answers: every one is `{error: <code>, message: <human text>}`, never exception text."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TypeVar

import redis.exceptions
from starlette.responses import JSONResponse

from eco2.errors import StoreUnavailable

T = TypeVar("T")


class ApiError(Exception):
    """An answer other than success: status, machine-readable code, safe message, optional headers."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_body(self.status, self.code, self.message, self.headers)


def error_body(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=dict(headers or {}))


def not_found(what: str = "job") -> ApiError:
    # Unknown and someone else's look the same, so job ids cannot be probed.
    return ApiError(404, "not_found", f"no such {what}")


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await a Redis call; an unreachable Redis becomes a 503, as in the job store."""
    try:
        return await awaitable
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise StoreUnavailable(message="the job store is unreachable") from exc
