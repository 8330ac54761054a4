"""The dead-letter sink: records a failed event for replay, marks its job failed and tells the client."""

from __future__ import annotations

import json
from dataclasses import dataclass

from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.events import EventType
from eco2.jobs import JobStatus, JobStore, Stage
from eco2.settings import Settings

DEAD_LETTER_TTL_SECONDS = 7 * 24 * 3600
DEAD_LETTER_MAXLEN = 100_000
# The stage whose function consumes each event type: where the job failed.
FAILED_STAGE = {
    EventType.SCAN_REQUESTED: Stage.VISION,
    EventType.SCAN_CLASSIFIED: Stage.RULE,
    EventType.SCAN_RULED: Stage.ANSWER,
    EventType.SCAN_ANSWERED: Stage.REWARD,
}
ERROR_EXTENSIONS = ("knativeerrorcode", "knativeerrordest", "knativeerrordata")


@dataclass(slots=True)
class DeadLetterContext:
    store: JobStore

    @classmethod
    async def create(cls, settings: Settings) -> DeadLetterContext:
        return cls(JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds))

    async def aclose(self) -> None:
        await self.store.aclose()


async def record(event: CloudEvent, ctx: DeadLetterContext) -> CloudEvent | None:
    attributes = {k: str(v) for k, v in event.get_attributes().items()}
    data = event.get_data()
    redis = ctx.store.redis
    seen = keys.dead_letter_seen(attributes["id"], attributes.get("knativeerrordest", ""))
    if await redis.set(seen, "1", nx=True, ex=DEAD_LETTER_TTL_SECONDS):
        entry = {
            "attributes": json.dumps(attributes, ensure_ascii=False),
            "data": json.dumps(data, ensure_ascii=False, default=str),
        }
        await redis.xadd(keys.dead_letters(), entry, maxlen=DEAD_LETTER_MAXLEN, approximate=True)  # type: ignore[arg-type]
        await redis.expire(keys.dead_letters(), DEAD_LETTER_TTL_SECONDS)
    await _fail_job(event, data, attributes, ctx.store)
    return None


async def _fail_job(event: CloudEvent, data: object, attributes: dict[str, str], store: JobStore) -> None:
    try:
        stage = FAILED_STAGE.get(EventType(attributes["type"]))
    except ValueError:
        return
    job_id = attributes.get("subject")
    if stage is None or not job_id:
        return
    user_id = str(data.get("user_id", "")) if isinstance(data, dict) else ""
    code = attributes.get("knativeerrorcode", "")
    error = {
        "code": f"{stage.value}_failed",
        "message": "처리 중 문제가 생겨 스캔을 완료하지 못했어요",
        "status": code,
    }
    await store.transition(
        job_id,
        user_id,
        stage,
        JobStatus.FAILED,
        message=error["message"],
        data={"error": error},
        fields={"error": json.dumps(error, ensure_ascii=False)},
    )
