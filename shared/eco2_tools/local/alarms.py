"""RabbitMQ's resource alarms as a client sees them: a connection blocked (AMQP connection.blocked) by a memory or
disk alarm, and a wait for the unblock.

While an alarm lasts RabbitMQ stops reading from every publishing connection: a publish neither fails nor
completes. The runner shows it (readiness, `eco2 status`) and its dispatchers wait for the unblock before they
publish a stage's reply, so an alarm delays a scan by its own length instead of failing a delivery (a redelivery
costs a model stage its retry backoff and a second model call).

aiormq tracks the state (it declares the connection.blocked capability and handles both frames) but keeps it
private; it is read here, in one place, and reads as "not blocked" should a release rename it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aio_pika.abc import AbstractConnection

BLOCKED_PROBLEM = "RabbitMQ blocked publishing (a memory or disk alarm): publishes wait until it clears"


def _unblocked_event(connection: AbstractConnection | None) -> asyncio.Event | None:
    transport: Any = getattr(connection, "transport", None)
    raw = getattr(transport, "connection", None)
    event = getattr(raw, "_Connection__connection_unblocked", None)
    return event if isinstance(event, asyncio.Event) else None


def blocked(connection: AbstractConnection | None) -> bool:
    """RabbitMQ has blocked this connection (connection.blocked, not yet connection.unblocked)."""
    event = _unblocked_event(connection)
    return event is not None and not event.is_set()


async def wait_unblocked(connection: AbstractConnection | None, timeout: float) -> bool:
    """Wait (up to `timeout`) until the connection is not blocked; True if it is not. A reconnect (a new
    transport, its own state) is followed."""
    deadline = time.monotonic() + timeout
    while blocked(connection):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        event = _unblocked_event(connection)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), min(remaining, 1.0))
            except TimeoutError:
                continue
    return True
