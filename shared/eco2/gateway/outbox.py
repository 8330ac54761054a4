"""The durable outbox: every accepted scan's eco2.scan.requested waits in Redis until the broker took it.

A submit writes the job and its outbox entry in one MULTI (`JobStore.create(also=...)`), so an accepted
scan is never without its pending send. The entry is a member of a ZSET scored by when it is due (Redis's
clock, milliseconds) and the binary-mode event in a hash beside it. The submit sends once; a 2xx removes
the entry, anything else leaves it. A sweeper in every gateway process claims due entries atomically (the
claim pushes the score one lease ahead, so no other process sends it meanwhile), re-sends the SAME event
(same id: the stages deduplicate), removes it on a 2xx, and backs off exponentially (capped) otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from eco2 import keys, lua
from eco2.errors import store_call


@dataclass(frozen=True, slots=True)
class OutboxKeys:
    """One outbox per K_SINK: the gateways sending to one broker share it (and sweep each other's entries)."""

    due: str  # ZSET: job id -> due time (ms, Redis clock)
    events: str  # HASH: job id -> the event, binary mode (headers, body)
    attempts: str  # HASH: job id -> sends tried by a sweeper

    @classmethod
    def for_sink(cls, sink_url: str) -> OutboxKeys:
        base = f"{keys.PREFIX}:gateway:outbox:{hashlib.sha256(sink_url.encode()).hexdigest()[:16]}"
        return cls(base, f"{base}:events", f"{base}:attempts")


@dataclass(frozen=True, slots=True)
class Pending:
    """One outbox entry: the job it belongs to, its event in binary mode, and how often the sweeper tried it."""

    job_id: str
    headers: dict[str, str]
    body: bytes
    attempts: int


def encode(headers: dict[str, str], body: bytes) -> str:
    return json.dumps({"headers": headers, "body": body.decode()}, ensure_ascii=False)


def decode(job_id: str, raw: str, attempts: int) -> Pending | None:
    try:
        stored = json.loads(raw)
        return Pending(job_id, dict(stored["headers"]), str(stored["body"]).encode(), attempts)
    except (ValueError, KeyError, TypeError):
        return None


class Outbox:
    def __init__(self, client: aioredis.Redis, sink_url: str, *, lease_seconds: float) -> None:
        self._redis = client
        self.keys = OutboxKeys.for_sink(sink_url)
        self._lease_ms = int(lease_seconds * 1000)
        self._add = lua.register(client, "outbox_add")
        self._claim = lua.register(client, "outbox_claim")
        self._retry = lua.register(client, "outbox_retry")
        self._all = [self.keys.due, self.keys.events, self.keys.attempts]

    async def add(self, pipe: Pipeline, job_id: str, event: str) -> None:
        """Queue the entry on the job's creating MULTI; due one lease from now (the submit sends it first)."""
        await self._add(keys=[keys.job(job_id), *self._all], args=[job_id, event, self._lease_ms], client=pipe)

    async def claim(self, batch: int) -> list[Pending]:
        """Due entries, each pushed one lease ahead so no other sweeper sends it meanwhile."""
        raw = await store_call(self._claim(keys=self._all, args=[self._lease_ms, batch]))
        claimed: list[Pending] = []
        for i in range(0, len(raw), 3):
            job_id, event, attempts = str(raw[i]), str(raw[i + 1]), int(raw[i + 2])
            pending = decode(job_id, event, attempts)
            if pending is None:
                await self.remove(job_id)  # unreadable: it can never be sent
                continue
            claimed.append(pending)
        return claimed

    async def remove(self, job_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.zrem(self.keys.due, job_id)
        pipe.hdel(self.keys.events, job_id)
        pipe.hdel(self.keys.attempts, job_id)
        await store_call(pipe.execute())

    async def retry_later(self, job_id: str, delay_seconds: float) -> None:
        await store_call(self._retry(keys=[self.keys.due], args=[job_id, int(delay_seconds * 1000)]))

    async def depth(self) -> int:
        return int(await store_call(self._redis.zcard(self.keys.due)))
