"""The RabbitMQ topology the Knative RabbitMQ broker would build, declared from the manifests.

Broker: one durable headers exchange. Trigger: one queue (the broker's queue type) bound with `x-match: all`
on its filter attributes; a delay queue per backoff step (queue-wide TTL, dead-lettering back into the
trigger's queue, so a message waiting out its backoff survives a killed runner); a dead-letter exchange and
queue when it has a deadLetterSink. Declaring twice changes nothing; a changed filter is re-bound.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from eco2.manifests import DeliverySpec, Manifests, TriggerSpec, backoff_seconds


@dataclass(frozen=True, slots=True)
class TriggerTopology:
    trigger: TriggerSpec
    delivery: DeliverySpec | None
    queue: str
    dead_letter_exchange: str | None
    dead_letter_queue: str | None

    def retry_queue(self, attempt: int) -> str:
        assert self.delivery is not None
        return f"{self.queue}.retry.{round(backoff_seconds(self.delivery, attempt) * 1000)}ms"


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    exchange: str
    queue_type: str
    triggers: dict[str, TriggerTopology]

    @classmethod
    def plan(cls, manifests: Manifests, prefix: str = "eco2") -> Topology:
        base = f"{prefix}.{manifests.broker.name}"
        triggers: dict[str, TriggerTopology] = {}
        for name, trigger in sorted(manifests.triggers.items()):
            delivery = manifests.effective_delivery(trigger)
            queue = f"{base}.trigger.{name}"
            has_dls = delivery is not None and delivery.dead_letter_service is not None
            triggers[name] = TriggerTopology(
                trigger=trigger,
                delivery=delivery,
                queue=queue,
                dead_letter_exchange=f"{queue}.dlx" if has_dls else None,
                dead_letter_queue=f"{queue}.dlq" if has_dls else None,
            )
        return cls(prefix, f"{base}.broker", manifests.broker.queue_type, triggers)

    async def declare(self, channel: AbstractChannel, state_file: Path | None = None) -> AbstractExchange:
        """Declare everything (idempotent) and move each trigger's binding to its current filter."""
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.HEADERS, durable=True)
        previous = _read_bindings(state_file)
        applied: dict[str, dict[str, Any]] = {}
        for _name, plan in self.triggers.items():
            queue = await channel.declare_queue(plan.queue, durable=True, arguments={"x-queue-type": self.queue_type})
            binding: dict[str, Any] = {"x-match": "all", **plan.trigger.filter_attributes}
            old = previous.get(plan.queue)
            if old is not None and old != binding:
                await queue.unbind(exchange, arguments=old)
            await queue.bind(exchange, arguments=binding)
            applied[plan.queue] = binding
            await self._declare_retries(channel, plan)
            await self._declare_dead_letter(channel, plan)
        _write_bindings(state_file, {**previous, **applied})
        return exchange

    async def _declare_retries(self, channel: AbstractChannel, plan: TriggerTopology) -> None:
        if plan.delivery is None:
            return
        for attempt in range(1, plan.delivery.retry + 1):
            ttl_ms = round(backoff_seconds(plan.delivery, attempt) * 1000)
            await channel.declare_queue(
                plan.retry_queue(attempt),
                durable=True,
                arguments={
                    "x-queue-type": "classic",
                    "x-message-ttl": max(1, ttl_ms),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": plan.queue,
                },
            )

    async def _declare_dead_letter(self, channel: AbstractChannel, plan: TriggerTopology) -> AbstractQueue | None:
        if plan.dead_letter_exchange is None or plan.dead_letter_queue is None:
            return None
        dlx = await channel.declare_exchange(plan.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        dlq = await channel.declare_queue(
            plan.dead_letter_queue, durable=True, arguments={"x-queue-type": self.queue_type}
        )
        await dlq.bind(dlx)
        return dlq

    async def depths(self, channel: AbstractChannel) -> dict[str, int]:
        """Ready messages per trigger queue and dead-letter queue (passive: declares nothing)."""
        depths: dict[str, int] = {}
        for plan in self.triggers.values():
            for name in (plan.queue, plan.dead_letter_queue):
                if name is None:
                    continue
                queue = await channel.get_queue(name, ensure=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
        return depths


def _read_bindings(state_file: Path | None) -> dict[str, dict[str, Any]]:
    if state_file is None or not state_file.is_file():
        return {}
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): dict(v) for k, v in data.items() if isinstance(v, dict)}


def _write_bindings(state_file: Path | None, bindings: dict[str, dict[str, Any]]) -> None:
    if state_file is None:
        return
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(bindings, indent=2, sort_keys=True))
