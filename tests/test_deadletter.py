"""The dead-letter sink: records each letter once, fails the job visibly, never touches unknown event types."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.deadletter import DeadLetterContext, record
from eco2.jobs import JobStore


def letter(event_type: str, job_id: str = "job1") -> CloudEvent:
    return CloudEvent(
        {
            "type": event_type,
            "source": "/eco2/rules",
            "id": "evt-1",
            "subject": job_id,
            "knativeerrorcode": "503",
            "knativeerrordest": "http://127.0.0.1:9/answer",
            "knativeerrordata": '{"error": "model_unavailable"}',
        },
        {"job_id": job_id, "user_id": "user-1"},
    )


async def test_a_dead_letter_fails_its_job_and_is_recorded_once(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.create("job1", "user-1")
    context = DeadLetterContext(store)
    for _ in range(2):  # the sink itself may receive a letter twice
        assert await record(letter("eco2.scan.ruled"), context) is None
    entries = await redis_client.xrange(keys.dead_letters())
    assert len(entries) == 1
    attributes = json.loads(entries[0][1]["attributes"])
    assert attributes["knativeerrorcode"] == "503"
    job = await store.get("job1")
    assert job is not None
    assert (job["status"], job["stage"]) == ("failed", "answer")
    assert json.loads(job["error"])["code"] == "answer_failed"
    assert [e.status for e in await store.events("job1")] == ["queued", "failed"]
    assert await redis_client.ttl(keys.dead_letters()) > 0


async def test_a_letter_of_another_type_is_recorded_without_touching_jobs(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    await record(letter("someone.else.event"), DeadLetterContext(store))
    assert len(await redis_client.xrange(keys.dead_letters())) == 1
    assert await store.get("job1") is None
