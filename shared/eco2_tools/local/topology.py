"""The RabbitMQ topology the Knative RabbitMQ broker would build, declared from the manifests.

Broker: one durable headers exchange. Trigger: one queue (the broker's queue type) bound with `x-match: all`
on its filter attributes; a delay queue per backoff step (queue-wide TTL, dead-lettering back into the
trigger's queue, so a message waiting out its backoff survives a killed runner); a dead-letter exchange and
queue when it has a deadLetterSink. Declaring twice changes nothing; a changed filter is re-bound.

Delivery limit. The real broker gives each trigger queue a dead-letter exchange through a RabbitMQ policy
(`dead-letter-exchange`: the trigger's, else the broker's); policies cannot be set over AMQP, so here it is a
queue argument (`x-dead-letter-exchange`, at-least-once). A quorum trigger queue also carries
`x-delivery-limit` (DELIVERY_LIMIT, 20: RabbitMQ 4's default for quorum queues, made explicit so RabbitMQ 3.x
behaves the same): a message that keeps coming back without an outcome (the runner cannot publish its reply,
is killed mid-delivery again and again) reaches the deadLetterSink instead of circling forever (3.x) or being
silently dropped (4.x without a dead-letter exchange). A trigger without a deadLetterSink gets the limit too:
the message is then dropped, as Knative drops what fails with nowhere to go. Classic queues have no delivery
limit; there the dispatcher's growing pause before a requeue is the only brake.

Queue generations. RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED), and
policies cannot be set over AMQP, so the trigger queues that carry the limit have new names: generation 2,
`<prefix>.<broker>.trigger.<name>.v2` and its delay queues `….v2.retry.<ms>ms`. The dead-letter exchange and
queue keep their names (their arguments did not change). `eco2_tools.local.migration` moves whatever an older
runner left in the generation-1 queues (`<prefix>.<broker>.trigger.<name>` and its delay queues) into the new
ones at start-up, publish-confirmed before each ack, then deletes the old queues. A queue that exists with
other arguments still (a changed queueType) stops `eco2 up` with TopologyConflict, which names the queue and
the command that shows and removes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

from eco2_tools.manifests import DeliverySpec, Manifests, TriggerSpec, backoff_seconds

# The generation of the trigger queues' arguments; see the module docstring.
QUEUE_GENERATION = 2
# Deliveries of one message without an outcome before the broker dead-letters it (RabbitMQ 4's default too).
DELIVERY_LIMIT = 20
# The RabbitMQ broker's Trigger dispatcher prefetches at most this many messages, whatever its parallelism.
DISPATCHER_PREFETCH = 100


class TopologyConflict(RuntimeError):
    """A queue exists on RabbitMQ with other arguments than the manifests ask for; the message says what to do."""


@dataclass(frozen=True, slots=True)
class TriggerTopology:
    trigger: TriggerSpec
    delivery: DeliverySpec | None
    queue: str
    dead_letter_exchange: str | None
    dead_letter_queue: str | None
    legacy_queue: str = ""  # the generation-1 name of `queue`, drained by eco2_tools.local.migration

    def retry_queue(self, attempt: int, *, legacy: bool = False) -> str:
        assert self.delivery is not None
        base = self.legacy_queue if legacy else self.queue
        return f"{base}.retry.{round(backoff_seconds(self.delivery, attempt) * 1000)}ms"

    @property
    def retry_attempts(self) -> range:
        return range(1, (self.delivery.retry if self.delivery else 0) + 1)


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    exchange: str
    queue_type: str
    triggers: dict[str, TriggerTopology]
    delivery_limit: int = DELIVERY_LIMIT

    @classmethod
    def plan(cls, manifests: Manifests, prefix: str = "eco2", *, delivery_limit: int = DELIVERY_LIMIT) -> Topology:
        base = f"{prefix}.{manifests.broker.name}"
        triggers: dict[str, TriggerTopology] = {}
        for name, trigger in sorted(manifests.triggers.items()):
            delivery = manifests.effective_delivery(trigger)
            stem = f"{base}.trigger.{name}"
            has_dls = delivery is not None and delivery.dead_letter_service is not None
            triggers[name] = TriggerTopology(
                trigger=trigger,
                delivery=delivery,
                queue=f"{stem}.v{QUEUE_GENERATION}",
                dead_letter_exchange=f"{stem}.dlx" if has_dls else None,
                dead_letter_queue=f"{stem}.dlq" if has_dls else None,
                legacy_queue=stem,
            )
        return cls(prefix, f"{base}.broker", manifests.broker.queue_type, triggers, delivery_limit)

    def deliveries_in_flight(self) -> int:
        """The most deliveries the dispatchers hold at once: each Trigger's parallelism, capped by the prefetch."""
        return sum(min(plan.trigger.parallelism, DISPATCHER_PREFETCH) for plan in self.triggers.values())

    def trigger_queue_arguments(self, plan: TriggerTopology) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.queue_type != "quorum":
            return arguments  # classic queues have no delivery limit
        arguments["x-delivery-limit"] = self.delivery_limit
        if plan.dead_letter_exchange is not None:
            arguments["x-dead-letter-exchange"] = plan.dead_letter_exchange
            # At-least-once dead-lettering (RabbitMQ 3.10+) needs reject-publish overflow; no length limit is set.
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        return arguments

    async def declare(self, channel: AbstractChannel, state_file: Path | None = None) -> AbstractExchange:
        """Declare everything (idempotent) and move each trigger's binding to its current filter."""
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.HEADERS, durable=True)
        previous = _read_bindings(state_file)
        applied: dict[str, dict[str, Any]] = {}
        for _name, plan in self.triggers.items():
            # The dead-letter exchange first: the trigger queue names it.
            await self._declare_dead_letter(channel, plan)
            queue = await _declare_queue(channel, plan.queue, self.trigger_queue_arguments(plan))
            binding: dict[str, Any] = {"x-match": "all", **plan.trigger.filter_attributes}
            old = previous.get(plan.queue)
            if old is not None and old != binding:
                await queue.unbind(exchange, arguments=old)
            await queue.bind(exchange, arguments=binding)
            applied[plan.queue] = binding
            await self._declare_retries(channel, plan)
        _write_bindings(state_file, {**previous, **applied})
        return exchange

    async def _declare_retries(self, channel: AbstractChannel, plan: TriggerTopology) -> None:
        if plan.delivery is None:
            return
        for attempt in plan.retry_attempts:
            ttl_ms = round(backoff_seconds(plan.delivery, attempt) * 1000)
            await _declare_queue(
                channel,
                plan.retry_queue(attempt),
                {
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
        dlq = await _declare_queue(channel, plan.dead_letter_queue, {"x-queue-type": self.queue_type})
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


async def _declare_queue(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        raise TopologyConflict(
            f"RabbitMQ already has the queue {name!r} with other arguments than eco2 declares "
            f"({exc.args[0] if exc.args else exc}); it was declared by another eco2 version or with another "
            f"queueType. See what it holds with `rabbitmqctl list_queues name messages arguments`; once it is "
            f"empty (or its messages do not matter) remove it with `rabbitmqctl delete_queue {name}` and start "
            "again."
        ) from None


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


def source_queue(prefix: str, source: str) -> str:
    """The queue the local runner consumes a RabbitmqSource's exchange through (eco2_tools.local.sources)."""
    return f"{prefix}.source.{source}"


def topology_names(manifests: Manifests, prefix: str) -> tuple[list[str], list[str]]:
    """The queues and exchanges the runner declares under `prefix`, the RabbitmqSource queues included (not the
    sources' exchanges: other systems own them)."""
    from eco2_tools.manifests.rabbitmq_source import rabbitmq_sources

    topology = Topology.plan(manifests, prefix)
    queues: list[str] = []
    exchanges: list[str] = []
    for plan in topology.triggers.values():
        retries = [plan.retry_queue(attempt) for attempt in plan.retry_attempts]
        queues += filter(None, [plan.queue, *retries, plan.dead_letter_queue])
        if plan.dead_letter_exchange:
            exchanges.append(plan.dead_letter_exchange)
    exchanges.append(topology.exchange)
    queues += [source_queue(prefix, source.name) for source in rabbitmq_sources(manifests).values()]
    return queues, exchanges


async def delete_topology(channel: AbstractChannel, manifests: Manifests, prefix: str) -> int:
    """Remove every queue and exchange the runner declares under `prefix` (a throwaway topology: a benchmark's, a
    test's; a stopped pack's with `eco2 down --purge`); how many queues. Left behind, each run's queues pile up
    on the node until RabbitMQ itself slows to a halt."""
    queues, exchanges = topology_names(manifests, prefix)
    for name in queues:
        await channel.queue_delete(name)
    for name in exchanges:
        await channel.exchange_delete(name)
    return len(queues)
