"""One error hierarchy: what decides a 4xx (poison, never retried) from a 5xx (transient, retried)."""

from __future__ import annotations


class Eco2Error(Exception):
    """Base of every error the pack raises on purpose. `code` is machine-readable, `message` safe to show."""

    status = 500
    code = "internal"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code
        super().__init__(self.message)


class PoisonEvent(Eco2Error):
    """The event can never succeed (undecodable, missing attributes, invalid data): 422, not retried."""

    status = 422
    code = "invalid_event"


class BadRequest(PoisonEvent):
    """The request is not a CloudEvent at all: 400."""

    status = 400
    code = "invalid_cloudevent"


class PayloadTooLarge(BadRequest):
    status = 413
    code = "body_too_large"


class TransientError(Eco2Error):
    """A dependency failed in a way a later retry may fix (Redis, model 5xx, timeout): 503, retried."""

    status = 503
    code = "unavailable"


class RateLimited(TransientError):
    """The model (or another dependency) asked us to slow down: 429 with Retry-After, retried."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str = "", retry_after: float = 1.0) -> None:
        super().__init__(None, message)
        self.retry_after = retry_after


class StoreUnavailable(TransientError):
    code = "store_unavailable"


class ModelUnavailable(TransientError):
    code = "model_unavailable"
