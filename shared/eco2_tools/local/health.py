"""Is the broker there, is Redis there, and how old is each figure the runner reports.

`eco2 status` must not say "running" with depths read before an outage: each figure in the state file carries
when it was last read successfully, when a read was last tried, and the error of a failed one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractConnection

from eco2_tools.local.alarms import BLOCKED_PROBLEM, blocked

PROBE_TIMEOUT = 2.0


@dataclass(slots=True)
class Reading:
    """One figure's freshness: the last successful read, the last try, and why the last try failed."""

    ok: bool = False
    read_at: float | None = None
    checked_at: float | None = None
    error: str | None = None

    def record(self, error: str | None, at: float | None = None) -> None:
        now = time.time() if at is None else at
        self.checked_at = now
        self.ok = error is None
        self.error = error
        if error is None:
            self.read_at = now

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "read_at": self.read_at, "checked_at": self.checked_at, "error": self.error}


def broker_problem(connection: AbstractConnection | None, publisher: AbstractChannel | None) -> str | None:
    """None when the runner can publish: its connection and its publisher channel are open."""
    # A robust connection that is reconnecting is not "closed" (nobody closed it), only not connected.
    if connection is None or connection.is_closed or not connection.connected.is_set():
        return "the connection to RabbitMQ is down"
    if publisher is None or publisher.is_closed:
        return "the publisher channel is closed"
    if blocked(connection):
        return BLOCKED_PROBLEM
    return None


async def redis_problem(client: aioredis.Redis, timeout: float = PROBE_TIMEOUT) -> str | None:
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except TimeoutError:
        return f"Redis did not answer PING within {timeout:g}s"
    except Exception as exc:
        return f"Redis unreachable: {type(exc).__name__}: {exc}"[:300]
    return None


async def wait_open(channel: AbstractChannel, timeout: float) -> bool:
    """Wait (up to `timeout`) for a channel to be open again, e.g. restored after a reconnect; True if it is."""
    deadline = time.monotonic() + timeout
    while channel.is_closed:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True
