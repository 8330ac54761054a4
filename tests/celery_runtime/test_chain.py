"""The Celery runtime end to end: a scan through the gateway reaches `done` with the pack's SSE stages, a
transient model error is retried, a poison event is not, and a duplicate chain grants nothing twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any
from uuid import uuid4

import httpx
import redis.asyncio as aioredis

from eco2.celery_runtime.config import CeleryConfig
from eco2.celery_runtime.handlers import encode
from eco2.celery_runtime.submit import CelerySink, work_for
from eco2.events import EventType, Priority, ScanRequested, event_id
from eco2.gateway.sink import scan_requested
from eco2.jobs import JobStore
from eco2.tracing import new_traceparent
from eco2_tools.sse_client import SseMessage, amessages
from tests.celery_runtime.conftest import Worker
from tests.gateway.support import bearer
from tests.support import Child

STAGES = ["queued", "vision", "rule", "answer", "reward", "done"]
TERMINAL = {"done", "failed", "cancelled"}


async def scan(
    gateway: Child, standin_url: str, *, sample: str = "clear_pet_bottle", **extra: str
) -> tuple[str, list[SseMessage]]:
    """Submit through the gateway and read its SSE stream to the end: the job id and every message."""
    headers = bearer(f"user-{uuid4().hex[:8]}")
    body = {"image_url": f"{standin_url}/samples/{sample}.png", "user_input": "이거 어떻게 버려요?", **extra}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        accepted = await http.post("/api/v1/scan", json=body, headers=headers)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        messages: list[SseMessage] = []
        async with http.stream("GET", f"/api/v1/scan/{job_id}/events", headers=headers) as response:
            assert response.status_code == 200
            async for message in amessages(response):
                messages.append(message)
                if message.event in TERMINAL:
                    break
    return job_id, messages


def standin_calls(standin_url: str, job_id: str) -> dict[str, int]:
    return dict(httpx.get(f"{standin_url}/v1/standin/stats", timeout=5).json()["by_job"].get(job_id, {}))


async def test_a_scan_through_the_gateway_streams_the_packs_stages_to_done(
    celery_gateway: Child, worker: Worker, standin_url: str, redis_client: aioredis.Redis
) -> None:
    job_id, messages = await scan(celery_gateway, standin_url)
    stages = [m for m in messages if m.event != "delta"]
    assert [m.event for m in stages] == STAGES, worker.log()[-3000:]
    assert [m.json()["progress"] for m in stages] == [0, 25, 50, 75, 100, 100]
    assert any(m.event == "delta" for m in messages), "the answer streams its text, as in the pack"
    result = stages[-1].json()["data"]["result"]
    assert result["pipeline_result"]["classification"]["middle_category"]
    assert standin_calls(standin_url, job_id) == {"vision": 1, "answer": 1}
    # The chain's first task is the scan's own event: its id in the result backend.
    assert worker.received("vision", scan_requested_id(job_id)) == 1


def scan_requested_id(job_id: str) -> str:
    return event_id(job_id, EventType.SCAN_REQUESTED)


async def test_a_transient_model_error_is_retried(
    celery_gateway: Child, worker: Worker, standin_url: str, redis_client: aioredis.Redis
) -> None:
    httpx.post(f"{standin_url}/v1/standin/faults", json={"fail_next": 1, "status": 500, "kind": "vision"}, timeout=5)
    job_id, messages = await scan(celery_gateway, standin_url, sample="glass_bottle")
    assert [m.event for m in messages if m.event != "delta"] == STAGES
    assert standin_calls(standin_url, job_id)["vision"] == 2, "the failed call, then the retry's"
    assert worker.received("vision", scan_requested_id(job_id)) == 2


async def test_a_poison_event_is_not_retried_and_fails_its_job(
    celery_gateway: Child, worker: Worker, standin_url: str, redis_client: aioredis.Redis
) -> None:
    # The gateway allows gpt-4o-mini, the worker's stages do not: vision refuses the event (422, poison).
    job_id, messages = await scan(celery_gateway, standin_url, model="gpt-4o-mini")
    assert [(m.event, m.json()["status"]) for m in messages] == [("queued", "queued"), ("vision", "failed")]
    assert messages[-1].json()["data"]["error"]["code"] == "vision_failed"
    assert standin_calls(standin_url, job_id) == {}
    assert worker.received("vision", scan_requested_id(job_id)) == 1, "taken once: never retried"


async def test_a_duplicate_chain_records_and_grants_nothing_twice(
    worker: Worker, celery_env: dict[str, str], celery_config: CeleryConfig, standin_url: str, store: JobStore
) -> None:
    # What the outbox does when a send's answer was lost: the same event, published again.
    job_id, user_id = "celery-dup-1", "celery-dup-user"
    data = ScanRequested(job_id=job_id, user_id=user_id, image_url=f"{standin_url}/samples/clear_pet_bottle.png")
    await store.create(job_id, user_id, priority="normal", request=data.model_dump(mode="json"))
    event = encode(scan_requested(data, priority=Priority.NORMAL, traceparent=new_traceparent()))
    sink = CelerySink(celery_config, timeout_seconds=5)
    try:
        finals = await asyncio.gather(*(asyncio.to_thread(final_event, sink, event) for _ in range(2)))
    finally:
        await sink.aclose()
    granted = [f for f in finals if f is not None]
    assert len(granted) == 1, finals
    assert granted[0]["type"] == EventType.REWARD_GRANTED
    recorded = Counter((e.stage, e.status) for e in await store.events(job_id) if e.status != "delta")
    assert max(recorded.values()) == 1, recorded
    assert ("done", "done") in recorded
    assert standin_calls(standin_url, job_id) == {"vision": 1, "answer": 1}, "checkpoints reused"


def final_event(sink: CelerySink, event: dict[str, Any]) -> dict[str, Any] | None:
    """Publish the scan's chain and wait for it: what its reward task passed on to persist (None: nothing)."""
    last = work_for(sink.app, sink.config, event).apply_async()
    last.get(timeout=30)
    reward: Any = last.parent.get(timeout=1)
    return reward if isinstance(reward, dict) else None
