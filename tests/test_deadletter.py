"""The dead-letter sink: records each letter once, fails only the job whose live work the letter is."""

from __future__ import annotations

import json
from typing import cast

import pytest
import redis.asyncio as aioredis
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.dead_letters import DEAD_LETTER_TTL_SECONDS, DOMAINS
from eco2.errors import StoreUnavailable
from eco2.events import EventType, event_id
from eco2.functions.dead_letter import DeadLetterContext, record
from eco2.jobs import JobStatus, JobStore, Stage


def letter(event_type: str, job_id: str = "job1", *, own_id: bool = True) -> CloudEvent:
    """A dead letter as the broker sends it; `own_id` gives it the pack's id for (job, type)."""
    return CloudEvent(
        {
            "type": event_type,
            "source": "/eco2/rules",
            "id": event_id(job_id, event_type) if own_id else "curl-1",
            "subject": job_id,
            "knativeerrorcode": "503",
            "knativeerrordest": "http://127.0.0.1:9/answer",
            "knativeerrordata": '{"error": "model_unavailable"}',
        },
        {"job_id": job_id, "user_id": "user-1"},
    )


async def recorded(redis_client: aioredis.Redis) -> list[dict[str, str]]:
    entries = [entry for domain in DOMAINS for entry in await redis_client.xrange(keys.dead_letters(domain)) or []]
    return [cast(dict[str, str], fields) for _, fields in entries]


async def at_rule_stage(store: JobStore, job_id: str = "job1") -> None:
    await store.create(job_id, "user-1")
    await store.transition(job_id, "user-1", Stage.VISION, JobStatus.RUNNING)
    await store.transition(job_id, "user-1", Stage.RULE, JobStatus.RUNNING)


async def test_a_dead_letter_fails_its_job_and_is_recorded_once(store: JobStore, redis_client: aioredis.Redis) -> None:
    await at_rule_stage(store)
    context = DeadLetterContext(store)
    for _ in range(2):  # the sink itself may receive a letter twice
        assert await record(letter(EventType.SCAN_RULED), context) is None
    entries = await recorded(redis_client)
    assert len(entries) == 1
    attributes = json.loads(entries[0]["attributes"])
    assert attributes["knativeerrorcode"] == "503"
    job = await store.get("job1")
    assert job is not None
    assert (job["status"], job["stage"]) == ("failed", "answer")
    assert json.loads(job["error"])["code"] == "answer_failed"
    assert [e.status for e in await store.events("job1")] == ["queued", "running", "running", "failed"]
    assert await redis_client.ttl(keys.dead_letters("scan")) > 0


async def test_a_letter_of_another_type_is_recorded_without_touching_jobs(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    await record(letter("someone.else.event"), DeadLetterContext(store))
    assert len(await recorded(redis_client)) == 1
    assert await store.get("job1") is None


async def test_a_foreign_event_naming_a_running_job_leaves_it_running(store: JobStore) -> None:
    """A malformed scan.requested carrying a healthy job's id as subject must not fail that job."""
    await at_rule_stage(store)
    await record(letter(EventType.SCAN_RULED, own_id=False), DeadLetterContext(store))
    await record(letter(EventType.SCAN_REQUESTED), DeadLetterContext(store))  # the job is past vision
    assert await store.status("job1") is JobStatus.RUNNING
    assert [e.stage for e in await store.events("job1")] == ["queued", "vision", "rule"]


async def test_a_letter_for_an_unknown_job_creates_nothing(store: JobStore, redis_client: aioredis.Redis) -> None:
    await record(letter(EventType.SCAN_REQUESTED, "ghost"), DeadLetterContext(store))
    assert await store.get("ghost") is None
    assert len(await recorded(redis_client)) == 1


async def test_a_failed_write_leaves_the_letter_unrecorded_so_the_retry_records_it(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(keys.dead_letters("scan"), "not a stream")  # XADD now fails mid-record
    with pytest.raises(aioredis.ResponseError):
        await record(letter(EventType.SCAN_REQUESTED, "ghost"), DeadLetterContext(store))
    await redis_client.delete(keys.dead_letters("scan"))
    await record(letter(EventType.SCAN_REQUESTED, "ghost"), DeadLetterContext(store))
    assert len(await recorded(redis_client)) == 1


async def test_an_unreachable_redis_is_a_transient_error_not_a_crash() -> None:
    dead = JobStore(aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), ttl_seconds=60)
    with pytest.raises(StoreUnavailable):
        await record(letter(EventType.SCAN_REQUESTED), DeadLetterContext(dead))
    await dead.aclose()


async def test_a_letter_of_a_final_event_keeps_its_finished_job_as_long_as_the_letter(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    # persist writes a history-only event only while its job hash backs it (eco2.persist.evidence): a replay of its
    # letter may come days after the job's own TTL (an hour here).
    for job_id, user in (("done-1", "user-1"), ("done-2", "user-2")):
        await store.create(job_id, user)
        await store.transition(job_id, user, Stage.DONE, JobStatus.DONE)
    await store.create("running-1", "user-1")
    context = DeadLetterContext(store)
    for job_id in ("done-1", "done-2", "running-1"):
        await record(letter(EventType.SCAN_COMPLETED, job_id), context)
    assert await redis_client.ttl(keys.job("done-1")) > DEAD_LETTER_TTL_SECONDS - 60
    # Another user's job, or one not finished, keeps its own TTL.
    assert await redis_client.ttl(keys.job("done-2")) <= 3600
    assert await redis_client.ttl(keys.job("running-1")) <= 3600
