"""Redis job store: job status and progress, per-stage checkpoints, and the per-job event stream for SSE.

Every write is atomic (one Lua script per state change) and idempotent per (job, stage, status): a
redelivered event finds its transition's mark and changes nothing, so SSE never shows a duplicate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict, Unpack, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from eco2 import keys
from eco2.checkpoints import Checkpoints
from eco2.errors import REDIS_TRANSIENT, store_call
from eco2.job_scripts import REOPEN, delta_script, transition_script

if TYPE_CHECKING:
    from eco2.connections import ConnectionSettings

log = logging.getLogger("eco2.jobs")


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})
# The status of a stream entry that carries a piece of streamed text (never a job's status; see append_delta).
DELTA_STATUS = "delta"


class Stage(StrEnum):
    QUEUED = "queued"
    CHAT = "chat"
    VISION = "vision"
    RULE = "rule"
    ANSWER = "answer"
    REWARD = "reward"
    DONE = "done"


# The stage each pipeline function records, by function name (functions/<name>).
STAGE_OF_FUNCTION: dict[str, Stage] = {
    "vision": Stage.VISION,
    "rules": Stage.RULE,
    "answer": Stage.ANSWER,
    "reward": Stage.REWARD,
    "chat": Stage.CHAT,
}

STAGE_PROGRESS: dict[Stage, int] = {
    Stage.QUEUED: 0,
    Stage.CHAT: 50,
    Stage.VISION: 25,
    Stage.RULE: 50,
    Stage.ANSWER: 75,
    Stage.REWARD: 100,
    Stage.DONE: 100,
}


class TransitionOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this (stage, status) was already recorded: nothing changed
    REFUSED = "refused"  # the job already ended, or is not at the stage the caller expected: nothing changed
    MISSING = "missing"  # no such job (only `create` makes one): nothing changed


@dataclass(frozen=True, slots=True)
class Transition:
    outcome: TransitionOutcome
    seq: int
    status: str
    stage: str  # the job's stage after the call
    # The claim key passed along was set by this call (only ever when it applied).
    claimed: bool = False

    def passes_on(self, stage: Stage) -> bool:
        """Should the stage that asked for this transition emit its next event?

        Yes when it applied (or the job is not tracked, e.g. an event curl'd in), and on a repeat only while
        nothing after this stage was recorded: the first delivery's reply may have been lost. Work already
        passed on, or a job that ended, emits nothing again.
        """
        if self.outcome in (TransitionOutcome.APPLIED, TransitionOutcome.MISSING):
            return True
        return (
            self.outcome is TransitionOutcome.DUPLICATE
            and self.stage == stage.value
            and self.status not in TERMINAL_STATUSES
        )


@dataclass(frozen=True, slots=True)
class StreamEvent:
    seq: int
    stage: str
    status: str
    progress: int
    message: str
    data: dict[str, Any] | None
    at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """A key set (NX) in the same step as a transition: e.g. a reward id, so one reward is granted once."""

    key: str
    value: str
    ttl_seconds: int


class TransitionOptions(TypedDict, total=False):
    """What a transition records besides its stage and status (JobStore.transition)."""

    message: str
    data: dict[str, Any] | None
    fields: dict[str, str] | None
    progress: int | None
    create: bool
    expect_stage: Stage | None
    claim: Claim | None


class JobStore:
    """All job state lives here; the functions never touch Redis keys directly."""

    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int, store_grace_seconds: float = 15.0) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self._grace = store_grace_seconds
        self._transition = client.register_script(transition_script(TERMINAL_STATUSES))
        self._reopen = client.register_script(REOPEN)
        self._delta = client.register_script(delta_script(TERMINAL_STATUSES))
        self.checkpoints = Checkpoints(
            client, ttl_seconds=ttl_seconds, grace_seconds=store_grace_seconds, terminal=TERMINAL_STATUSES
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        ttl_seconds: int,
        store_grace_seconds: float = 15.0,
        connections: ConnectionSettings | None = None,
    ) -> JobStore:
        """A store on its own client; `connections` (else the process environment) gives its TLS and time limits."""
        # Bounded socket waits: a stalled Redis becomes a StoreUnavailable the caller can retry, not a hang; a
        # bounded pool: hundreds of concurrent deliveries share ECO2_REDIS_MAX_CONNECTIONS connections.
        from eco2.connections import async_redis_pool

        client = async_redis_pool(url, env=connections)
        return cls(client, ttl_seconds=ttl_seconds, store_grace_seconds=store_grace_seconds)

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except REDIS_TRANSIENT:
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
        also: Callable[[Pipeline], Awaitable[object]] | None = None,
    ) -> Transition:
        """Record a new job and its `queued` event; a second create of the same job is a duplicate.

        `request` (the client's body, JSON) and `fields` are kept on the job hash beside the state. `also`
        queues more commands in the same MULTI, after the create (the gateway's outbox entry).
        """
        extra = {"priority": priority, **(fields or {})}
        if request is not None:
            extra["request"] = json.dumps(request, ensure_ascii=False)
        return await self.transition(
            job_id,
            user_id,
            Stage.QUEUED,
            JobStatus.QUEUED,
            message=message or "접수되었어요",
            fields=extra,
            create=True,
            also=also,
        )

    async def replicated(self, replicas: int, timeout_ms: int, *, mark: str) -> int:
        """How many replicas (at most `replicas`, waiting up to `timeout_ms`) hold every write this Redis took
        before the call: WAIT counts only its own connection's writes, so it follows a write of the key `mark` on
        that connection, which the replication stream carries after the caller's writes on the others."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(mark, "1", px=60_000)
        pipe.wait(replicas, timeout_ms)
        _, acknowledged = await store_call(pipe.execute())
        return int(acknowledged)

    async def transition(
        self,
        job_id: str,
        user_id: str,
        stage: Stage,
        status: JobStatus,
        *,
        also: Callable[[Pipeline], Awaitable[object]] | None = None,
        **options: Unpack[TransitionOptions],
    ) -> Transition:
        """Record (stage, status) once. Only `create` makes a missing job; `expect_stage` refuses a job that
        is at another stage; `claim` sets a key (NX) together with the transition and reports who set it."""
        script_keys, argv = self.transition_args(job_id, user_id, stage, status, **options)
        if also is None:
            raw = await store_call(self._transition(keys=script_keys, args=argv))
        else:
            pipe = self._redis.pipeline(transaction=True)
            await self._transition(keys=script_keys, args=argv, client=pipe)
            await also(pipe)
            raw = (await store_call(pipe.execute()))[0]
        return transition_reply(raw)

    def transition_args(
        self, job_id: str, user_id: str, stage: Stage, status: JobStatus, **options: Unpack[TransitionOptions]
    ) -> tuple[list[str], list[str]]:
        """The keys and arguments of the transition script (eco2.job_scripts) that records this change."""
        pairs: list[str] = []
        for name, value in (options.get("fields") or {}).items():
            pairs += [name, value]
        progress, data = options.get("progress"), options.get("data")
        expect_stage, claim = options.get("expect_stage"), options.get("claim")
        argv = [
            stage.value,
            status.value,
            str(STAGE_PROGRESS[stage] if progress is None else progress),
            options.get("message", ""),
            json.dumps(data, ensure_ascii=False) if data is not None else "",
            str(self._ttl),
            f"{time.time():.6f}",
            user_id,
            job_id,
            "1" if options.get("create") else "0",
            expect_stage.value if expect_stage else "",
            claim.value if claim else "",
            str(claim.ttl_seconds) if claim else "0",
            *pairs,
        ]
        return [keys.job(job_id), keys.job_events(job_id)] + ([claim.key] if claim else []), argv

    async def append_delta(
        self, job_id: str, stage: Stage, index: int, text: str, *, closed_by: JobStatus = JobStatus.RUNNING
    ) -> TransitionOutcome:
        """Append piece `index` of `stage`'s streamed text to the job's event stream (status `delta`).

        Recorded once per (stage, index); refused once the job ended, and a duplicate once the stage recorded
        its `closed_by` transition (its whole text), so a redelivered stage never streams after its result.
        """
        return await self.append_deltas(job_id, stage, [(index, text)], closed_by=closed_by)

    async def append_deltas(
        self, job_id: str, stage: Stage, pieces: Sequence[tuple[int, str]], *, closed_by: JobStatus
    ) -> TransitionOutcome:
        """`append_delta` for several pieces in order, in one round trip; each piece is still its own entry."""
        argv = [stage.value, str(self._ttl), f"{time.time():.6f}", f"mark:{stage}:{closed_by}", *delta_args(pieces)]
        raw = await store_call(self._delta(keys=[keys.job(job_id), keys.job_events(job_id)], args=argv))
        return TransitionOutcome(raw[0])

    async def get(self, job_id: str) -> dict[str, str] | None:
        fields = await store_call(self._redis.hgetall(keys.job(job_id)))
        return cast(dict[str, str], fields) or None

    async def status(self, job_id: str) -> JobStatus | None:
        raw = await store_call(self._redis.hget(keys.job(job_id), "status"))
        return JobStatus(str(raw)) if raw else None

    async def events(self, job_id: str, *, after_seq: int = 0, count: int = 100) -> list[StreamEvent]:
        entries = await store_call(self._redis.xrange(keys.job_events(job_id), min=f"({after_seq}-0", count=count))
        return [stream_event(cast(dict[str, str], fields)) for _, fields in entries or []]

    async def cancel(self, job_id: str, *, message: str = "취소되었어요") -> Transition | None:
        """Record `cancelled` at the job's current stage: None for an unknown job, REFUSED once it ended.

        The stage is read first, so a stage finishing in between can leave the hash naming the earlier
        stage; the job is cancelled either way, and the stages drop its later events.
        """
        job = await self.get(job_id)
        if job is None:
            return None
        stage = next((known for known in Stage if known.value == job.get("stage")), Stage.QUEUED)
        return await self.transition(job_id, job.get("user_id", ""), stage, JobStatus.CANCELLED, message=message)

    async def reopen(
        self, job_id: str, *, failed_at: Stage, wait_at: Stage, message: str, data: dict[str, Any]
    ) -> Transition:
        """Reopen a job that failed at `failed_at` for a replay: `failed → queued`, waiting at `wait_at` again.

        APPLIED once; a job not failed at that stage is REFUSED (already reopened, done, cancelled), an unknown
        one MISSING. The reopen is an event on the job's stream (SSE shows it) and clears the failed marks.
        """
        now, document = f"{time.time():.6f}", json.dumps(data, ensure_ascii=False)
        argv = [failed_at.value, wait_at.value, message, document, str(self._ttl), now]
        raw = await store_call(self._reopen(keys=[keys.job(job_id), keys.job_events(job_id)], args=argv))
        outcome, seq, current, at = raw
        return Transition(TransitionOutcome(outcome), int(seq), str(current or ""), str(at or ""))


def delta_args(pieces: Sequence[tuple[int, str]]) -> list[str]:
    """Streamed pieces as the delta scripts take them: (index, data json) pairs, in order."""
    args: list[str] = []
    for index, text in pieces:
        args += [str(index), json.dumps({"delta": text, "index": index}, ensure_ascii=False)]
    return args


def transition_reply(raw: Sequence[Any]) -> Transition:
    """The transition script's reply: outcome, seq, the job's status and stage after the call, claimed."""
    outcome, seq, current, at, claimed = raw
    return Transition(TransitionOutcome(outcome), int(seq), str(current or ""), str(at or ""), bool(claimed))


def stream_event(fields: dict[str, str]) -> StreamEvent:
    """One job-stream entry as a StreamEvent (the store's reads, and the gateway's shared XREAD)."""
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
