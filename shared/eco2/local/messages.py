"""CloudEvents as AMQP messages, the way the RabbitMQ broker carries them: attributes as headers, data as body."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

# Runner bookkeeping travels beside the attributes; a CloudEvent attribute name is [a-z0-9] only, so a
# dashed name can never collide with one.
ATTEMPT_HEADER = "x-eco2-attempt"
PUBLISHED_AT_HEADER = "x-eco2-published-at"


def to_message(event: CloudEvent, *, attempt: int = 0, published_at: float | None = None) -> aio_pika.Message:
    http_headers, body = to_binary(event)
    headers: dict[str, Any] = {}
    content_type = "application/json"
    for name, value in http_headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-"):
            headers[lowered[3:]] = str(value)
        elif lowered == "content-type":
            content_type = str(value)
    return with_bookkeeping(body or b"", headers, content_type, attempt=attempt, published_at=published_at)


def with_bookkeeping(
    body: bytes,
    attributes: Mapping[str, Any],
    content_type: str | None,
    *,
    attempt: int,
    published_at: float | None = None,
) -> aio_pika.Message:
    headers = {k: v for k, v in attributes.items() if not k.startswith("x-")}
    headers[ATTEMPT_HEADER] = attempt
    headers[PUBLISHED_AT_HEADER] = f"{time.time() if published_at is None else published_at:.6f}"
    return aio_pika.Message(
        body,
        headers=headers,
        content_type=content_type or "application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(headers.get("id", "")),
    )


def attributes_of(message: AbstractIncomingMessage) -> dict[str, str]:
    return {k: _text(v) for k, v in (message.headers or {}).items() if not k.startswith("x-")}


def attempt_of(message: AbstractIncomingMessage) -> int:
    raw = (message.headers or {}).get(ATTEMPT_HEADER, 0)
    try:
        return int(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def published_at_of(message: AbstractIncomingMessage) -> float | None:
    raw = (message.headers or {}).get(PUBLISHED_AT_HEADER)
    try:
        return float(_text(raw)) if raw is not None else None
    except ValueError:
        return None


def http_request(message: AbstractIncomingMessage) -> tuple[dict[str, str], bytes]:
    """The binary-mode HTTP request for a message: `ce-` headers, its content type, its body."""
    headers = {f"ce-{name}": value for name, value in attributes_of(message).items()}
    headers["content-type"] = message.content_type or "application/json"
    return headers, message.body


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
