"""Redis job store: job status and progress, per-stage checkpoints, and the per-job event stream for SSE.

Every write is atomic (one Lua script per state change) and idempotent per (job, stage, status): a
redelivered event finds its transition's mark and changes nothing, so SSE never shows a duplicate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions
from pydantic import BaseModel

from eco2 import keys
from eco2.errors import TransientError, store_call


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})


class Stage(StrEnum):
    QUEUED = "queued"
    VISION = "vision"
    RULE = "rule"
    ANSWER = "answer"
    REWARD = "reward"
    DONE = "done"


STAGE_PROGRESS: dict[Stage, int] = {
    Stage.QUEUED: 0,
    Stage.VISION: 25,
    Stage.RULE: 50,
    Stage.ANSWER: 75,
    Stage.REWARD: 100,
    Stage.DONE: 100,
}


class TransitionOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this (stage, status) was already recorded: nothing changed
    REFUSED = "refused"  # the job already ended (done, failed, cancelled): nothing changed


@dataclass(frozen=True, slots=True)
class Transition:
    outcome: TransitionOutcome
    seq: int
    status: str


@dataclass(frozen=True, slots=True)
class StreamEvent:
    seq: int
    stage: str
    status: str
    progress: int
    message: str
    data: dict[str, Any] | None
    at: float


# KEYS: job hash, job event stream. ARGV: stage, status, progress, message, data json, ttl, now,
# user_id, then field/value pairs to set on the hash (result, error, ...).
_TRANSITION = """
local job, stream = KEYS[1], KEYS[2]
local stage, status, progress, message, data, ttl, now, user = ARGV[1], ARGV[2], tonumber(ARGV[3]),
  ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
local mark = 'mark:' .. stage .. ':' .. status
local seen = redis.call('HGET', job, mark)
local current = redis.call('HGET', job, 'status')
if seen then return {'duplicate', tonumber(seen), current} end
if current == 'done' or current == 'failed' or current == 'cancelled' then
  return {'refused', tonumber(redis.call('HGET', job, 'seq') or '0'), current}
end
if not current then
  redis.call('HSET', job, 'job_id', ARGV[9], 'user_id', user, 'created_at', now, 'priority', 'normal')
end
local seq = redis.call('HINCRBY', job, 'seq', 1)
local old = tonumber(redis.call('HGET', job, 'progress') or '0')
if progress < old then progress = old end
redis.call('HSET', job, mark, seq, 'status', status, 'stage', stage, 'progress', progress,
  'message', message, 'updated_at', now)
for i = 10, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
redis.call('XADD', stream, seq .. '-0', 'seq', seq, 'stage', stage, 'status', status,
  'progress', progress, 'message', message, 'data', data, 'at', now)
redis.call('EXPIRE', job, ttl)
redis.call('EXPIRE', stream, ttl)
return {'applied', seq, status}
"""

# KEYS: checkpoints hash. ARGV: stage, json, ttl. First writer wins; everyone gets the winner's value.
_CHECKPOINT = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return redis.call('HGET', KEYS[1], ARGV[1])
"""

# KEYS: lease. ARGV: token. Only the holder may release its lease.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class JobStore:
    """All job state lives here; the functions never touch Redis keys directly."""

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._transition = client.register_script(_TRANSITION)
        self._checkpoint = client.register_script(_CHECKPOINT)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, *, ttl_seconds: int) -> JobStore:
        return cls(aioredis.from_url(url, decode_responses=True), ttl_seconds=ttl_seconds)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except redis.exceptions.RedisError:
            return False

    async def create(
        self,
        job_id: str,
        user_id: str,
        *,
        priority: str = "normal",
        message: str = "",
        request: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
    ) -> Transition:
        """Record a new job and its `queued` event; a second create of the same job is a duplicate.

        `request` (the client's body, JSON) and `fields` are kept on the job hash beside the state.
        """
        extra = {"priority": priority, **(fields or {})}
        if request is not None:
            extra["request"] = json.dumps(request, ensure_ascii=False)
        return await self.transition(
            job_id, user_id, Stage.QUEUED, JobStatus.QUEUED, message=message or "접수되었어요", fields=extra
        )

    async def transition(
        self,
        job_id: str,
        user_id: str,
        stage: Stage,
        status: JobStatus,
        *,
        message: str = "",
        data: dict[str, Any] | None = None,
        fields: dict[str, str] | None = None,
        progress: int | None = None,
    ) -> Transition:
        pairs: list[str] = []
        for name, value in (fields or {}).items():
            pairs += [name, value]
        argv = [
            stage.value,
            status.value,
            str(STAGE_PROGRESS[stage] if progress is None else progress),
            message,
            json.dumps(data, ensure_ascii=False) if data is not None else "",
            str(self._ttl),
            f"{time.time():.6f}",
            user_id,
            job_id,
            *pairs,
        ]
        raw = await store_call(self._transition(keys=[keys.job(job_id), keys.job_events(job_id)], args=argv))
        outcome, seq, current = raw
        return Transition(TransitionOutcome(outcome), int(seq), str(current or ""))

    async def get(self, job_id: str) -> dict[str, str] | None:
        fields = await store_call(self._redis.hgetall(keys.job(job_id)))
        return cast(dict[str, str], fields) or None

    async def status(self, job_id: str) -> JobStatus | None:
        raw = await store_call(self._redis.hget(keys.job(job_id), "status"))
        return JobStatus(str(raw)) if raw else None

    async def events(self, job_id: str, *, after_seq: int = 0, count: int = 100) -> list[StreamEvent]:
        entries = await store_call(self._redis.xrange(keys.job_events(job_id), min=f"({after_seq}-0", count=count))
        return [_stream_event(cast(dict[str, str], fields)) for _, fields in entries or []]

    async def get_checkpoint(self, job_id: str, stage: Stage, model: type[M]) -> M | None:
        raw = await store_call(self._redis.hget(keys.job_checkpoints(job_id), stage.value))
        return model.model_validate_json(raw) if raw else None

    async def put_checkpoint(self, job_id: str, stage: Stage, value: M) -> M:
        """Store a stage's output unless one is already stored; return whichever is stored (the first)."""
        stored = await store_call(
            self._checkpoint(
                keys=[keys.job_checkpoints(job_id)],
                args=[stage.value, value.model_dump_json(), str(self._ttl)],
            )
        )
        return type(value).model_validate_json(stored)

    async def once(
        self,
        job_id: str,
        stage: Stage,
        model: type[M],
        compute: Callable[[], Awaitable[M]],
        *,
        timeout_seconds: float,
        poll_seconds: float = 0.05,
    ) -> M:
        """Run `compute` at most once per (job, stage), across redeliveries and concurrent deliveries.

        A finished stage's checkpoint is reused. Concurrent deliveries take a lease: one computes, the others
        wait for its checkpoint; if the holder dies, its lease expires and a waiter takes over.
        """
        cached = await self.get_checkpoint(job_id, stage, model)
        if cached is not None:
            return cached
        lease_key = keys.stage_lease(job_id, stage.value)
        token = f"{time.time_ns()}-{id(compute)}"
        deadline = time.monotonic() + timeout_seconds
        lease_ttl_ms = int(timeout_seconds * 1000) + 5000
        while True:
            if await store_call(self._redis.set(lease_key, token, nx=True, px=lease_ttl_ms)):
                try:
                    cached = await self.get_checkpoint(job_id, stage, model)
                    if cached is not None:
                        return cached
                    return await self.put_checkpoint(job_id, stage, await compute())
                finally:
                    await store_call(self._release(keys=[lease_key], args=[token]))
            cached = await self.get_checkpoint(job_id, stage, model)
            if cached is not None:
                return cached
            if time.monotonic() > deadline:
                raise TransientError("stage_busy", "another delivery of this stage is still running")
            await asyncio.sleep(poll_seconds)

    async def cancel(self, job_id: str, *, message: str = "취소되었어요") -> Transition | None:
        """Record `cancelled` at the job's current stage: None for an unknown job, REFUSED once it ended.

        The stage is read first, so a stage finishing in between can leave the hash naming the earlier
        stage; the job is cancelled either way, and the stages drop its later events.
        """
        job = await self.get(job_id)
        if job is None:
            return None
        try:
            stage = Stage(job.get("stage") or Stage.QUEUED.value)
        except ValueError:
            stage = Stage.QUEUED
        return await self.transition(job_id, job.get("user_id", ""), stage, JobStatus.CANCELLED, message=message)

    @staticmethod
    def stream_event(fields: dict[str, str]) -> StreamEvent:
        """One job-stream entry as a StreamEvent, for readers outside the store (the gateway's shared XREAD)."""
        return _stream_event(fields)


def _stream_event(fields: dict[str, str]) -> StreamEvent:
    data = fields.get("data") or ""
    return StreamEvent(
        seq=int(fields["seq"]),
        stage=fields["stage"],
        status=fields["status"],
        progress=int(fields["progress"]),
        message=fields.get("message", ""),
        data=json.loads(data) if data else None,
        at=float(fields.get("at", "0")),
    )
