"""Dispatch like the Knative RabbitMQ broker: one consumer per Trigger, HTTP delivery, reply, retry, dead letter.

A message is acked only after its outcome is durable: the reply published (with a publisher confirm), the
retry parked in its delay queue, or the dead letter published. A runner killed at any point leaves the
message either unacked (redelivered) or already safe in a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import httpx
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import from_http

from eco2.local.messages import (
    attempt_of,
    attributes_of,
    http_request,
    published_at_of,
    to_message,
    with_bookkeeping,
)
from eco2.local.metrics import RunnerMetrics
from eco2.local.topology import TriggerTopology
from eco2.manifests import DeliverySpec

log = logging.getLogger("eco2.local.dispatcher")
# Knative retries these 4xx codes like 5xx; every other 4xx goes straight to the dead-letter sink.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})
ERROR_DATA_LIMIT = 1024
DEFAULT_TIMEOUT = 60.0


class Outcome(StrEnum):
    REPLIED = "replied"
    ACKED = "acked"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    release: Callable[[], None]


# Given a Service name, a ready endpoint for one request (may cold-start a process and wait for it).
EndpointSource = Callable[[str], Awaitable[Endpoint]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one HTTP delivery: a status (0 = no response) and the response, if any."""

    status: int
    response: httpx.Response | None
    url: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status in RETRYABLE_4XX


async def deliver(
    http: httpx.AsyncClient,
    endpoints: EndpointSource,
    service: str,
    message: AbstractIncomingMessage,
    timeout: float,
) -> Attempt:
    headers, body = http_request(message)
    try:
        endpoint = await endpoints(service)
    except Exception as exc:  # a function that cannot start is a failed delivery, retried like a 503
        return Attempt(0, None, f"service:{service}", f"cannot start {service}: {type(exc).__name__}")
    try:
        response = await http.post(endpoint.url, headers=headers, content=body, timeout=timeout)
        # One client serves every function: a cookie one of them sets must not ride along to the others.
        if http.cookies:
            http.cookies.clear()
        return Attempt(response.status_code, response, endpoint.url)
    except httpx.TimeoutException:
        return Attempt(0, None, endpoint.url, "timeout")
    except httpx.TransportError as exc:
        return Attempt(0, None, endpoint.url, f"transport error: {type(exc).__name__}")
    finally:
        endpoint.release()


class TriggerConsumer:
    """Consumes one Trigger's queue with `parallelism` deliveries in flight, no more."""

    def __init__(
        self,
        plan: TriggerTopology,
        *,
        channel: AbstractChannel,
        publisher: AbstractChannel,
        broker_exchange: AbstractExchange,
        endpoints: EndpointSource,
        http: httpx.AsyncClient,
        metrics: RunnerMetrics,
        default_timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.plan = plan
        self._channel = channel
        self._publisher = publisher
        self._exchange = broker_exchange
        self._endpoints = endpoints
        self._http = http
        self._metrics = metrics
        self._timeout = (plan.delivery.timeout_seconds if plan.delivery else None) or default_timeout
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return self.plan.trigger.name

    async def start(self) -> None:
        # prefetch = parallelism: the broker never hands this consumer more than N unacked messages.
        await self._channel.set_qos(prefetch_count=self.plan.trigger.parallelism)
        self._queue = await self._channel.get_queue(self.plan.queue)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages; let in-flight deliveries finish (or stay unacked, redelivered next time)."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace_seconds)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            outcome = await self.handle(message)
            self._metrics.deliveries.labels(self.name, outcome.value).inc()
        except Exception:
            # The outcome could not be made durable (broker connection lost mid-publish): leave the message
            # to RabbitMQ, which redelivers it; never ack what was not handled.
            log.exception(
                "delivery not completed; the message will be redelivered", extra={"fields": {"trigger": self.name}}
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> Outcome:
        published = published_at_of(message)
        if published is not None:
            self._metrics.hop_seconds.labels(self.name).observe(max(0.0, time.time() - published))
        attempt = await deliver(
            self._http, self._endpoints, self.plan.trigger.subscriber_service, message, self._timeout
        )
        if attempt.ok:
            outcome = await self._publish_reply(attempt)
        elif attempt.retryable and self._may_retry(message):
            await self._park_for_retry(message)
            outcome = Outcome.RETRIED
        else:
            outcome = await self._dead_letter(message, attempt)
        await message.ack()
        return outcome

    async def _publish_reply(self, attempt: Attempt) -> Outcome:
        response = attempt.response
        if response is None or (not response.content and "ce-type" not in response.headers):
            return Outcome.ACKED
        try:
            reply = from_http(dict(response.headers), response.content)
        except (CloudEventError, ValueError):
            log.warning(
                "subscriber answered 2xx with a body that is not a CloudEvent",
                extra={"fields": {"trigger": self.name}},
            )
            return Outcome.ACKED
        await self._exchange.publish(to_message(reply), routing_key="")
        return Outcome.REPLIED

    def _may_retry(self, message: AbstractIncomingMessage) -> bool:
        delivery = self.plan.delivery
        return delivery is not None and attempt_of(message) < delivery.retry

    async def _park_for_retry(self, message: AbstractIncomingMessage) -> None:
        attempt = attempt_of(message) + 1
        parked = with_bookkeeping(
            message.body, attributes_of(message), message.content_type, attempt=attempt, published_at=None
        )
        # The delay queue dead-letters the copy back into the trigger's queue when its TTL expires.
        await self._publisher.default_exchange.publish(parked, routing_key=self.plan.retry_queue(attempt))

    async def _dead_letter(self, message: AbstractIncomingMessage, attempt: Attempt) -> Outcome:
        if self.plan.dead_letter_exchange is None:
            log.warning("event dropped: failed with no dead-letter sink", extra={"fields": {"trigger": self.name}})
            return Outcome.DROPPED
        attributes = {
            **attributes_of(message),
            "knativeerrordest": attempt.url,
            "knativeerrorcode": str(attempt.status),
            "knativeerrordata": _error_data(attempt),
        }
        letter = with_bookkeeping(message.body, attributes, message.content_type, attempt=attempt_of(message))
        exchange = await self._publisher.get_exchange(self.plan.dead_letter_exchange)
        await exchange.publish(letter, routing_key="")
        return Outcome.DEAD_LETTERED


def _error_data(attempt: Attempt) -> str:
    if attempt.response is not None:
        return attempt.response.text[:ERROR_DATA_LIMIT]
    return attempt.error[:ERROR_DATA_LIMIT]


class DeadLetterConsumer:
    """Delivers a Trigger's dead letters to its deadLetterSink; a failing sink keeps them queued, never lost."""

    def __init__(
        self,
        plan: TriggerTopology,
        delivery: DeliverySpec,
        *,
        channel: AbstractChannel,
        endpoints: EndpointSource,
        http: httpx.AsyncClient,
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
        self._pause = retry_pause
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
        attempt = await deliver(self._http, self._endpoints, self._service, message, DEFAULT_TIMEOUT)
        if attempt.ok or not attempt.retryable:
            # A sink that refuses a letter outright (4xx) will refuse it forever; it is logged and dropped.
            if not attempt.ok:
                log.error("dead-letter sink refused a letter", extra={"fields": {"status": attempt.status}})
            await message.ack()
            self._metrics.deliveries.labels(f"{self.plan.trigger.name}.dlq", "acked").inc()
            return
        await asyncio.sleep(self._pause)
        await message.nack(requeue=True)
