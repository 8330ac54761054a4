"""CloudEvents as AMQP messages, the way the RabbitMQ broker carries them: attributes as headers, data as body."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http

from eco2.binary import binary_headers, encode

# Runner bookkeeping travels beside the attributes; a CloudEvent attribute name is [a-z0-9] only, so a
# dashed name can never collide with one.
ATTEMPT_HEADER = "x-eco2-attempt"
PUBLISHED_AT_HEADER = "x-eco2-published-at"
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
SPECVERSIONS = frozenset({"1.0", "0.3"})  # what the SDK's from_http reads


class NotACloudEvent(ValueError):
    """A subscriber's 2xx reply that is neither a binary nor a structured CloudEvent."""


def to_message(event: CloudEvent, *, attempt: int = 0, published_at: float | None = None) -> aio_pika.Message:
    http_headers, body = encode(event)
    content_type, attributes = binary_headers(http_headers)
    return with_bookkeeping(
        body, attributes, content_type or "application/json", attempt=attempt, published_at=published_at
    )


def reply_message(headers: Mapping[str, str], body: bytes) -> aio_pika.Message:
    """The message for a subscriber's reply (`headers` lower-cased): a binary reply's attributes and body are
    carried over as they came, with the same checks from_http makes; a structured one goes through the SDK."""
    content_type, attributes = binary_headers(headers)
    if (content_type or "").lower().startswith("application/cloudevents"):
        try:
            return to_message(from_http(dict(headers), body))
        except (CloudEventError, ValueError) as exc:
            raise NotACloudEvent(str(exc)) from None
    if any(not attributes.get(name) for name in REQUIRED_ATTRIBUTES) or attributes["specversion"] not in SPECVERSIONS:
        raise NotACloudEvent("a binary CloudEvent needs ce-specversion, ce-id, ce-source and ce-type")
    return with_bookkeeping(body, attributes, content_type, attempt=0)


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
