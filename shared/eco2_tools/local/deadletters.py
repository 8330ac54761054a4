"""The dead-letter side of a Trigger: delivers the letters in its dead-letter queue to the deadLetterSink.

A letter reaches the queue two ways: the dispatcher published it with the knativeerror* extensions (retries
exhausted, a 4xx), or RabbitMQ dead-lettered it from the trigger queue when it hit the delivery limit (it kept
coming back without an outcome). The second kind carries no extensions of ours; they are added here from the
broker's `x-death` record so the sink records why.

The dead-letter queue itself has no delivery limit of ours (RabbitMQ 3.x: none; RabbitMQ 4 applies its default
of 20 to quorum queues): a sink that keeps failing is asked again after a pause that doubles up to 30 s, so
those 20 deliveries span minutes, not seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from eco2_tools.local.dispatcher import DEFAULT_TIMEOUT, Backoff, EndpointSource, deliver, event_fields
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.topology import TriggerTopology
from eco2_tools.manifests import DeliverySpec

log = logging.getLogger("eco2_tools.local.dispatcher")


class DeadLetterConsumer:
    """Delivers a Trigger's dead letters to its deadLetterSink; a failing sink keeps them queued, never lost."""

    def __init__(
        self,
        plan: TriggerTopology,
        delivery: DeliverySpec,
        *,
        channel: AbstractChannel,
        endpoints: EndpointSource,
        http: aiohttp.ClientSession,
        metrics: RunnerMetrics,
        retry_pause: float = 1.0,
    ) -> None:
        assert plan.dead_letter_queue is not None
        assert delivery.dead_letter_service is not None
        self.plan = plan
        self._service = delivery.dead_letter_service
        self._channel = channel
        self._endpoints = endpoints
        self._http = http
        self._metrics = metrics
        # A sink that keeps failing is asked less and less often (RabbitMQ 4 counts these deliveries too).
        self._backoff = Backoff(first=retry_pause)
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        await self._channel.set_qos(prefetch_count=1)
        self._queue = await self._channel.get_queue(self.plan.dead_letter_queue or "")
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        extra = broker_error_extensions(message.headers or {}, self.plan.trigger.subscriber_service)
        attempt = await deliver(
            self._http, self._endpoints, self._service, message, DEFAULT_TIMEOUT, extra_headers=extra
        )
        if attempt.ok or not attempt.retryable:
            # A sink that refuses a letter outright (4xx) will refuse it forever; it is logged and dropped.
            if not attempt.ok:
                log.error(
                    "dead-letter sink refused a letter",
                    extra={"fields": {"status": attempt.status, **event_fields(message)}},
                )
            self._backoff.reset()
            await message.ack()
            self._metrics.deliveries.labels(f"{self.plan.trigger.name}.dlq", "acked").inc()
            return
        pause = self._backoff.next()
        log.warning(
            "dead-letter sink unavailable; the letter stays queued",
            extra={"fields": {"status": attempt.status, "error": attempt.error, "pause_seconds": pause}},
        )
        await asyncio.sleep(pause)
        await message.nack(requeue=True)


def broker_error_extensions(headers: Mapping[str, Any], subscriber: str) -> dict[str, str]:
    """The knativeerror* headers for a letter RabbitMQ dead-lettered itself (delivery limit); {} for ours."""
    if "knativeerrorcode" in headers:
        return {}
    deaths: Any = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
    reason = _text(death.get("reason", headers.get("x-first-death-reason", "")))
    if not reason:
        return {}
    queue = _text(death.get("queue", ""))
    return {
        "ce-knativeerrordest": f"service:{subscriber}",
        "ce-knativeerrorcode": "0",
        "ce-knativeerrordata": f"RabbitMQ dead-lettered it from {queue} ({reason}): it was delivered again and "
        "again without an outcome (the runner could not publish the reply or ack, or was stopped mid-delivery)",
    }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
