"""Move what an older runner left in generation-1 trigger queues into the current ones (see eco2_tools.local.topology).

Run at start-up, after the current topology is declared and before anything consumes or publishes: each
message of an old queue is published persistently into its new queue, confirmed, and only then acked, so a
runner killed halfway leaves the rest in the old queue for the next start (a message may be moved twice,
never lost; the stages are idempotent). An old delay queue's messages go to the new delay queue of the same
step, so they wait out their backoff again. An old queue is deleted once empty; deleting it drops its binding,
so events are no longer copied into it. Old delay queues of a backoff that has since changed are not known by
name and are left alone (`rabbitmqctl list_queues` shows them).
"""

from __future__ import annotations

import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.exceptions import AMQPError

from eco2.connections import amqp_connect
from eco2_tools.local.topology import Topology

log = logging.getLogger("eco2_tools.local.migration")


class InUse(Exception):
    """An old queue someone else still uses: it is left for the next start."""


async def migrate_legacy_queues(amqp_url: str, topology: Topology) -> int:
    """Drain every generation-1 queue of the topology into its successor; the number of messages moved."""
    moved = 0
    connection = await amqp_connect(amqp_url)
    try:
        for plan in topology.triggers.values():
            pairs = [(plan.retry_queue(n, legacy=True), plan.retry_queue(n)) for n in plan.retry_attempts]
            pairs.append((plan.legacy_queue, plan.queue))
            for old, new in pairs:
                if old and old != new:
                    moved += await _drain(connection, old, new)
    finally:
        await connection.close()
    return moved


async def _drain(connection: AbstractConnection, old: str, new: str) -> int:
    # A passive declare of a missing queue closes its channel: one channel per queue.
    channel = await connection.channel(publisher_confirms=True)
    try:
        try:
            queue = await channel.get_queue(old, ensure=True)
        except AMQPError:
            return 0
        if queue.declaration_result.consumer_count:
            raise InUse(f"{queue.declaration_result.consumer_count} consumer(s), an older runner still up?")
        moved = 0
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            await _forward(channel, message, new)
            moved += 1
        # Quorum queues refuse delete's if-unused/if-empty flags: check, then delete (nothing publishes yet).
        left = (await channel.get_queue(old, ensure=True)).declaration_result
        if left.message_count or left.consumer_count:
            raise InUse(f"{left.message_count} message(s) and {left.consumer_count} consumer(s) appeared")
        await queue.delete(if_unused=False, if_empty=False)
        if moved:
            log.warning(
                "moved messages from a queue of an older eco2 version",
                extra={"fields": {"from": old, "to": new, "messages": moved}},
            )
        return moved
    except (AMQPError, InUse) as exc:
        # Another consumer on the old queue (an older runner still up): leave it; the next start tries again.
        log.warning("could not finish moving an older queue", extra={"fields": {"queue": old, "error": repr(exc)}})
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


async def _forward(channel: AbstractChannel, message: AbstractIncomingMessage, queue: str) -> None:
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("x-") or k.startswith("x-eco2-")}
    copy = aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
    )
    await channel.default_exchange.publish(copy, routing_key=queue)  # confirmed before the ack below
    await message.ack()
