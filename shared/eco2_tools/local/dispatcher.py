"""Dispatch like the Knative RabbitMQ broker: one consumer per Trigger, HTTP delivery, reply, retry, dead letter.

A message is acked only after its outcome is durable: the reply published (with a publisher confirm), the
retry parked in its delay queue, or the dead letter published. A runner killed at any point leaves the
message either unacked (redelivered) or already safe in a queue.

When the outcome cannot be made durable (the broker is back but the publisher channel is not yet, a publish
fails), the message is given back (nack, requeue) only after a pause that grows with the consumer's run of
such failures (Backoff: 0.5 s, doubling, at most 30 s) and once the publisher channel is open again, so a
broker hiccup never turns into a hot redelivery loop; the trigger queue's delivery limit (eco2_tools.local.topology)
sends a message that never gets an outcome to the deadLetterSink. Each retry, requeue and dead letter is
logged with the event's id, type, attempt, the status or error, and the delay chosen; successes are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from eco2_tools.local.alarms import blocked, wait_unblocked
from eco2_tools.local.health import wait_open
from eco2_tools.local.messages import (
    NotACloudEvent,
    attempt_of,
    attributes_of,
    http_request,
    published_at_of,
    reply_message,
    with_bookkeeping,
)
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.topology import DISPATCHER_PREFETCH, TriggerTopology
from eco2_tools.manifests import backoff_seconds

log = logging.getLogger("eco2_tools.local.dispatcher")
# Knative retries these 4xx codes like 5xx; every other 4xx goes straight to the dead-letter sink.
RETRYABLE_4XX = frozenset({404, 408, 409, 429})
ERROR_DATA_LIMIT = 1024
DEFAULT_TIMEOUT = 60.0
PAUSE_FIRST = 0.5
PAUSE_MAX = 30.0
# How long a publish waits out a resource alarm before it is tried anyway (and, if it fails, given back).
ALARM_WAIT = 600.0


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


class Backoff:
    """A pause that doubles with each failure in a row, up to `longest`; a success starts it over."""

    def __init__(self, first: float = PAUSE_FIRST, longest: float = PAUSE_MAX) -> None:
        self.first = first
        self.longest = longest
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return min(self.longest, self.first * 2.0 ** min(self.failures - 1, 30))

    def reset(self) -> None:
        self.failures = 0


def event_fields(message: AbstractIncomingMessage) -> dict[str, object]:
    """What a log line needs to trace one delivery of an event."""
    headers = message.headers or {}
    return {
        "event_id": message.message_id or str(headers.get("id", "")),
        "event_type": str(headers.get("type", "")),
        "attempt": attempt_of(message),
        "redelivered": bool(message.redelivered),
        "delivery_count": headers.get("x-delivery-count"),
    }


# Given a Service name, a ready endpoint for one request (may cold-start a process and wait for it).
EndpointSource = Callable[[str], Awaitable[Endpoint]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one HTTP delivery: a status (0 = no response) and, with a response, its headers and body."""

    status: int
    url: str
    error: str = ""
    headers: dict[str, str] | None = None  # names lower-cased; None: no response
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status in RETRYABLE_4XX


async def deliver(
    http: aiohttp.ClientSession,
    endpoints: EndpointSource,
    service: str,
    message: AbstractIncomingMessage,
    timeout: float,
    *,
    extra_headers: dict[str, str] | None = None,
) -> Attempt:
    headers, body = http_request(message)
    if extra_headers:
        headers.update(extra_headers)
    try:
        endpoint = await endpoints(service)
    except Exception as exc:  # a function that cannot start is a failed delivery, retried like a 503
        return Attempt(0, f"service:{service}", f"cannot start {service}: {type(exc).__name__}")
    try:
        async with http.post(endpoint.url, headers=headers, data=body, timeout=_timeout(timeout)) as response:
            content = await response.read()
            answered = {name.lower(): value for name, value in response.headers.items()}
            return Attempt(response.status, endpoint.url, headers=answered, body=content)
    except TimeoutError:
        return Attempt(0, endpoint.url, "timeout")
    except aiohttp.ClientError as exc:
        return Attempt(0, endpoint.url, f"transport error: {type(exc).__name__}")
    finally:
        endpoint.release()


_TIMEOUTS: dict[float, aiohttp.ClientTimeout] = {}


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # A handful of distinct values (one per Trigger's delivery timeout): built once each.
    found = _TIMEOUTS.get(seconds)
    if found is None:
        found = _TIMEOUTS[seconds] = aiohttp.ClientTimeout(total=seconds)
    return found


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
        http: aiohttp.ClientSession,
        metrics: RunnerMetrics,
        default_timeout: float = DEFAULT_TIMEOUT,
        pause_max: float = PAUSE_MAX,
        connection: AbstractConnection | None = None,
        alarm_wait: float = ALARM_WAIT,
    ) -> None:
        self.plan = plan
        # The publisher's connection: a resource alarm blocks it, and a publish then waits for the unblock.
        self._connection = connection
        self._alarm_wait = alarm_wait
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
        self._backoff = Backoff(longest=pause_max)
        # Test mode (fault suite): every event delivered twice at once, both replies published.
        self._duplicates = os.environ.get("ECO2_DUPLICATE_DELIVERIES") == "1"

    @property
    def name(self) -> str:
        return self.plan.trigger.name

    async def start(self) -> None:
        # As the RabbitMQ broker's dispatcher: `parallelism` workers, but never more than its fixed AMQP prefetch
        # of unacked messages, so at most min(parallelism, 100) deliveries are in flight.
        await self._channel.set_qos(prefetch_count=min(self.plan.trigger.parallelism, DISPATCHER_PREFETCH))
        self._queue = await self._channel.get_queue(self.plan.queue)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking messages; let in-flight deliveries finish (or stay unacked, redelivered next time)."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=grace_seconds)
        # Still running (a pause before a requeue, a slow subscriber): unacked, so RabbitMQ redelivers them.
        for task in list(self._inflight):
            task.cancel()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            outcome = await self.handle(message)
            self._backoff.reset()
            self._metrics.deliveries.labels(self.name, outcome.value).inc()
        except Exception as exc:
            await self._give_back(message, exc)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _give_back(self, message: AbstractIncomingMessage, exc: Exception) -> None:
        """The outcome could not be made durable: pause, wait for the publisher, then let RabbitMQ redeliver.

        Never ack what was not handled. The message stays unacked meanwhile, so prefetch keeps this consumer
        from taking more while the broker is in trouble.
        """
        pause = self._backoff.next()
        self._metrics.deliveries.labels(self.name, "requeued").inc()
        log.warning(
            "delivery not completed; the message goes back to the queue after a pause",
            extra={
                "fields": {
                    "trigger": self.name,
                    **event_fields(message),
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "pause_seconds": pause,
                }
            },
        )
        await asyncio.sleep(pause)
        await wait_open(self._publisher, self._backoff.longest)
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def handle(self, message: AbstractIncomingMessage) -> Outcome:
        published = published_at_of(message)
        if published is not None:
            self._metrics.hop_seconds.labels(self.name).observe(max(0.0, time.time() - published))
        service = self.plan.trigger.subscriber_service
        if self._duplicates:
            attempt, twin = await asyncio.gather(
                *(deliver(self._http, self._endpoints, service, message, self._timeout) for _ in range(2))
            )
            if twin.ok:
                await self._publish_reply(twin)
        else:
            attempt = await deliver(self._http, self._endpoints, service, message, self._timeout)
        if attempt.ok:
            outcome = await self._publish_reply(attempt)
        elif attempt.retryable and self._may_retry(message):
            await self._park_for_retry(message, attempt)
            outcome = Outcome.RETRIED
        else:
            outcome = await self._dead_letter(message, attempt)
        await message.ack()
        return outcome

    async def _publish_reply(self, attempt: Attempt) -> Outcome:
        headers = attempt.headers
        if headers is None or (not attempt.body and "ce-type" not in headers):
            return Outcome.ACKED
        try:
            reply = reply_message(headers, attempt.body)
        except NotACloudEvent:
            log.warning(
                "subscriber answered 2xx with a body that is not a CloudEvent",
                extra={"fields": {"trigger": self.name}},
            )
            return Outcome.ACKED
        await self._unblocked()
        await self._exchange.publish(reply, routing_key="")
        return Outcome.REPLIED

    async def _unblocked(self) -> None:
        """Hold a publish while a memory or disk alarm blocks the connection: the delivery waits out the alarm
        (its message stays unacked) instead of failing into a redelivery and its retry backoff."""
        if blocked(self._connection):
            log.warning(
                "RabbitMQ blocked publishing (a resource alarm): waiting", extra={"fields": {"trigger": self.name}}
            )
            await wait_unblocked(self._connection, self._alarm_wait)

    def _may_retry(self, message: AbstractIncomingMessage) -> bool:
        delivery = self.plan.delivery
        return delivery is not None and attempt_of(message) < delivery.retry

    async def _park_for_retry(self, message: AbstractIncomingMessage, failed: Attempt) -> None:
        attempt = attempt_of(message) + 1
        assert self.plan.delivery is not None
        delay = backoff_seconds(self.plan.delivery, attempt)
        fields = {**self._failure(message, failed, delay), "retry": attempt, "retries": self.plan.delivery.retry}
        log.info("delivery failed; retrying after the backoff", extra={"fields": fields})
        parked = with_bookkeeping(
            message.body, attributes_of(message), message.content_type, attempt=attempt, published_at=None
        )
        # The delay queue dead-letters the copy back into the trigger's queue when its TTL expires.
        await self._unblocked()
        await self._publisher.default_exchange.publish(parked, routing_key=self.plan.retry_queue(attempt))

    async def _dead_letter(self, message: AbstractIncomingMessage, attempt: Attempt) -> Outcome:
        if self.plan.dead_letter_exchange is None:
            log.warning(
                "event dropped: failed with no dead-letter sink", extra={"fields": self._failure(message, attempt)}
            )
            return Outcome.DROPPED
        log.warning("delivery failed; dead-lettered", extra={"fields": self._failure(message, attempt)})
        attributes = {
            **attributes_of(message),
            "knativeerrordest": attempt.url,
            "knativeerrorcode": str(attempt.status),
            "knativeerrordata": _error_data(attempt),
        }
        letter = with_bookkeeping(message.body, attributes, message.content_type, attempt=attempt_of(message))
        await self._unblocked()
        exchange = await self._publisher.get_exchange(self.plan.dead_letter_exchange)
        await exchange.publish(letter, routing_key="")
        return Outcome.DEAD_LETTERED

    def _failure(
        self, message: AbstractIncomingMessage, attempt: Attempt, delay: float | None = None
    ) -> dict[str, object]:
        fields = {"trigger": self.name, **event_fields(message), "status": attempt.status, "url": attempt.url}
        if attempt.error:
            fields["error"] = attempt.error
        if delay is not None:
            fields["delay_seconds"] = delay
        return fields


def _error_data(attempt: Attempt) -> str:
    if attempt.headers is not None:
        return attempt.body[: ERROR_DATA_LIMIT * 4].decode(errors="replace")[:ERROR_DATA_LIMIT]
    return attempt.error[:ERROR_DATA_LIMIT]
