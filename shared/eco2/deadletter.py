"""The dead-letter sink: records a failed event for replay and, when it was its job's live work, fails the job.

A letter is recorded exactly once (the dedupe mark and the stream entry are written in one script, so a Redis
error in between can neither lose the record nor mark it recorded). It fails a job only when the event is
that job's live work: the pack's own event id for (job, type), and the job still waiting at the stage that
emitted it. Anything else (a curl'd event naming a healthy job, an unknown job id) is recorded and the job
left alone; unknown ids never create jobs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.errors import store_call
from eco2.events import FUNCTION_EVENTS, EventType, event_id
from eco2.jobs import STAGE_OF_FUNCTION, JobStatus, JobStore, Stage, TransitionOutcome
from eco2.settings import Settings

log = logging.getLogger("eco2.deadletter")
DEAD_LETTER_TTL_SECONDS = 7 * 24 * 3600
DEAD_LETTER_MAXLEN = 100_000
ERROR_EXTENSIONS = ("knativeerrorcode", "knativeerrordest", "knativeerrordata")

# The stage that failed, for each event type a pipeline function consumes.
FAILED_STAGE: dict[str, Stage] = {
    str(consumed): STAGE_OF_FUNCTION[name] for name, (consumed, _) in FUNCTION_EVENTS.items()
}
# Where a job waits while an event of that type is its live work: the stage of the function that emitted it
# (the gateway's scan.requested leaves the job `queued`).
WAITING_STAGE: dict[str, Stage] = {
    str(consumed): next(
        (STAGE_OF_FUNCTION[name] for name, (_, emits) in FUNCTION_EVENTS.items() if consumed in emits), Stage.QUEUED
    )
    for consumed, _ in FUNCTION_EVENTS.values()
}

# KEYS: seen mark, dead-letter stream. ARGV: mark ttl, attributes json, data json, maxlen, recorded_at.
# The entry is written before the mark: a failing XADD leaves no mark behind (scripts do not roll back).
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'attributes', ARGV[2], 'data', ARGV[3],
  'recorded_at', ARGV[5])
redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
return 1
"""


@dataclass(slots=True)
class DeadLetterContext:
    store: JobStore

    @classmethod
    async def create(cls, settings: Settings) -> DeadLetterContext:
        return cls(JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds))

    async def aclose(self) -> None:
        await self.store.aclose()

    async def ready(self) -> bool:
        return await self.store.ping()


async def record(event: CloudEvent, ctx: DeadLetterContext) -> CloudEvent | None:
    attributes = {k: str(v) for k, v in event.get_attributes().items()}
    data = event.get_data()
    if await _record_once(ctx.store, attributes, data):
        log.warning(
            "dead letter recorded",
            extra={"fields": {"type": attributes["type"], "id": attributes["id"], **_errors(attributes)}},
        )
    await _fail_live_job(attributes, data, ctx.store)
    return None


async def _record_once(store: JobStore, attributes: dict[str, str], data: object) -> bool:
    seen = keys.dead_letter_seen(attributes["id"], attributes.get("knativeerrordest", ""))
    script = store.redis.register_script(_RECORD)
    args = [
        str(DEAD_LETTER_TTL_SECONDS),
        json.dumps(attributes, ensure_ascii=False),
        json.dumps(data, ensure_ascii=False, default=str),
        str(DEAD_LETTER_MAXLEN),
        f"{time.time():.3f}",
    ]
    return bool(await store_call(script(keys=[seen, keys.dead_letters()], args=args)))


async def _fail_live_job(attributes: dict[str, str], data: object, store: JobStore) -> None:
    event_type, job_id = attributes["type"], attributes.get("subject", "")
    stage = FAILED_STAGE.get(event_type)
    if stage is None or not job_id or attributes["id"] != event_id(job_id, EventType(event_type)):
        return  # not the pack's own event for that job: recorded, the job is left alone
    user_id = str(data.get("user_id", "")) if isinstance(data, dict) else ""
    error = {
        "code": f"{stage.value}_failed",
        "message": "처리 중 문제가 생겨 스캔을 완료하지 못했어요",
        "status": attributes.get("knativeerrorcode", ""),
    }
    failed = await store.transition(
        job_id,
        user_id,
        stage,
        JobStatus.FAILED,
        message=error["message"],
        data={"error": error},
        fields={"error": json.dumps(error, ensure_ascii=False)},
        expect_stage=WAITING_STAGE[event_type],
    )
    if failed.outcome is not TransitionOutcome.APPLIED:
        log.info("dead letter left its job alone", extra={"fields": {"outcome": failed.outcome.value}})


def _errors(attributes: dict[str, str]) -> dict[str, str]:
    return {name: attributes[name][:200] for name in ERROR_EXTENSIONS if name in attributes}
