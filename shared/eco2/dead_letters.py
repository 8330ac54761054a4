"""Dead letters, as the dead-letter sink records them and replay re-sends them: their domains (one queue each),
their mark, and the job a letter is the live work of (only that job may be failed by it, or reopened for it).
"""

from __future__ import annotations

import json

from eco2 import keys
from eco2.errors import store_call
from eco2.events import FUNCTION_EVENTS, EventType, event_id
from eco2.jobs import STAGE_OF_FUNCTION, JobStatus, JobStore, Stage, Transition
from eco2.persist.records import PERSISTED_TYPES

DEAD_LETTER_TTL_SECONDS = 7 * 24 * 3600
DEAD_LETTER_MAXLEN = 100_000
ERROR_EXTENSIONS = ("knativeerrorcode", "knativeerrordest", "knativeerrordata")

# The dead-letter queues, one per domain of work: the scan stages (vision, rules, answer), rewards (the reward
# stage and whatever takes eco2.reward.granted), auth/cache sync; anything else is `other`.
DOMAINS: tuple[str, ...] = ("scan", "reward", "chat", "auth", "other")
DOMAIN_OF_TYPE: dict[str, str] = {
    EventType.SCAN_REQUESTED: "scan",
    EventType.SCAN_CLASSIFIED: "scan",
    EventType.SCAN_RULED: "scan",
    EventType.SCAN_ANSWERED: "reward",
    EventType.REWARD_GRANTED: "reward",  # persistence of a granted reward
    EventType.SCAN_COMPLETED: "reward",  # persistence of a finished scan's history
    EventType.CHAT_REQUESTED: "chat",
}
# Auth and cache sync: token revocations and character catalog updates from other systems.
DOMAIN_OF_PREFIX: tuple[tuple[str, str], ...] = (
    ("eco2.auth.", "auth"),
    ("eco2.cache.", "auth"),
    ("eco2.character.", "auth"),
)
FAILED_MESSAGE = "처리 중 문제가 생겨 스캔을 완료하지 못했어요"

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


def domain_of(event_type: str) -> str:
    """The dead-letter queue an event of this type goes to."""
    if event_type in DOMAIN_OF_TYPE:
        return DOMAIN_OF_TYPE[event_type]
    return next((domain for prefix, domain in DOMAIN_OF_PREFIX if event_type.startswith(prefix)), "other")


def seen_key(attributes: dict[str, str]) -> str:
    """The mark that records a letter once; a replay clears it so the replayed event can be recorded again."""
    return keys.dead_letter_seen(attributes["id"], attributes.get("knativeerrordest", ""))


def live_job(attributes: dict[str, str]) -> str | None:
    """The job this event is the live work of (the pack's own event id for (job, type)), else None."""
    event_type, job_id = attributes.get("type", ""), attributes.get("subject", "")
    if event_type not in FAILED_STAGE or not job_id or attributes.get("id") != event_id(job_id, event_type):
        return None
    return job_id


async def fail_job(store: JobStore, job_id: str, user_id: str, event_type: str, status: str) -> Transition:
    """Fail a job whose live work (an event of `event_type`) was given up on, if it still waits for it."""
    stage = FAILED_STAGE[event_type]
    error = {"code": f"{stage.value}_failed", "message": FAILED_MESSAGE, "status": status}
    return await store.transition(
        job_id,
        user_id,
        stage,
        JobStatus.FAILED,
        message=FAILED_MESSAGE,
        data={"error": error},
        fields={"error": json.dumps(error, ensure_ascii=False)},
        expect_stage=WAITING_STAGE[event_type],
    )


async def keep_job_for_replay(store: JobStore, attributes: dict[str, str], data: object) -> bool:
    """Keep a finished job's hash as long as a letter of its final event (7 days, not the job's 24 h).

    persist writes a final event only while Redis backs it (eco2.persist.evidence); a history-only event's one
    backing is its job hash, so a replay after the job's TTL would otherwise be refused. Only the job's own user
    and a done job: a letter naming another user's job leaves it as it is. True when the TTL was lengthened.
    """
    if attributes.get("type") not in PERSISTED_TYPES or not isinstance(data, dict):
        return False
    job_id, user_id = str(data.get("job_id", "")), str(data.get("user_id", ""))
    if not job_id or not user_id:
        return False
    job = keys.job(job_id)
    owner, status = await store_call(store.redis.hmget(job, "user_id", "status"))
    if owner != user_id or status != JobStatus.DONE:
        return False
    return bool(await store_call(store.redis.expire(job, DEAD_LETTER_TTL_SECONDS, gt=True)))
