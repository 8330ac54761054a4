"""The runner's state file (`.eco2/runner.json`), read by `eco2 status`: what runs, and how fresh each figure is.

Written every housekeeping tick. A failed read (the broker is down, Redis does not answer) does not stop the
write: the state says the dependency is unreachable, keeps the last queue depths with the time they were read,
and carries the error.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractConnection

from eco2.connections import async_redis
from eco2_tools.local.alarms import blocked
from eco2_tools.local.health import PROBE_TIMEOUT, Reading, broker_problem, redis_problem
from eco2_tools.local.topology import Topology


class StateReporter:
    def __init__(self, path: Path, topology: Topology, redis_url: str) -> None:
        self.path = path
        self.topology = topology
        self.redis = async_redis(
            redis_url, decode_responses=False, socket_timeout=PROBE_TIMEOUT, socket_connect_timeout=PROBE_TIMEOUT
        )
        self.broker = Reading()
        self.blocked = False  # a resource alarm blocks the runner's publishes (eco2_tools.local.alarms)
        self.redis_reading = Reading()
        self.queues = Reading()
        self.depths: dict[str, int] = {}

    async def refresh(self, connection: AbstractConnection | None, publisher: AbstractChannel | None) -> None:
        """Probe the broker and Redis and read the queue depths; never raises for an unreachable dependency."""
        problem = broker_problem(connection, publisher)
        # Blocked is reachable: shown as its own state, and no depth read (a blocked connection is not read from).
        self.blocked = blocked(connection)
        self.broker.record(None if self.blocked else problem)
        self.redis_reading.record(await redis_problem(self.redis))
        if problem is not None or connection is None:
            self.queues.record(problem or "no connection")
            return
        try:
            self.depths = await asyncio.wait_for(self._read_depths(connection), PROBE_TIMEOUT)
        except TimeoutError:
            self.queues.record(f"RabbitMQ did not answer within {PROBE_TIMEOUT:g}s")
            self.broker.record("RabbitMQ did not answer the queue-depth read")
        except Exception as exc:
            self.queues.record(f"{type(exc).__name__}: {exc}"[:300])
        else:
            self.queues.record(None)

    async def _read_depths(self, connection: AbstractConnection) -> dict[str, int]:
        channel = await connection.channel()
        try:
            return await self.topology.depths(channel)
        finally:
            if not channel.is_closed:
                await channel.close()

    def document(self, snapshot: dict[str, Any], *, ready: bool) -> dict[str, Any]:
        now = time.time()
        return {
            **snapshot,
            "ready": ready,
            "broker_health": {"reachable": self.broker.ok, "blocked": self.blocked, **self.broker.as_json()},
            "redis_health": {"reachable": self.redis_reading.ok, **self.redis_reading.as_json()},
            "queues": self.depths,
            "queues_read": self.queues.as_json(),
            "functions_read_at": now,  # the runner's own record of its processes: fresh whenever this is written
            "updated_at": now,
        }

    def write(self, snapshot: dict[str, Any], *, ready: bool) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.document(snapshot, ready=ready), indent=2))
        tmp.replace(self.path)

    async def aclose(self) -> None:
        await self.redis.aclose()
