"""SSE against `eco2 serve gateway` as its own process: replay then live, resume, cancel, heartbeats, one reader."""

from __future__ import annotations

import asyncio
import json

import httpx
import redis.asyncio as aioredis

from eco2.gateway.context import client_names
from eco2.jobs import JobStatus, JobStore, Stage
from eco2_tools.sse_client import SseMessage
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import (
    LIVE_INSTANCE,
    PIPELINE,
    PUBLIC_IMAGE,
    TERMINAL,
    advance,
    bearer,
    done_event,
    finish,
    gateway_connections,
    metric,
    open_stream,
    read_stream,
)
from tests.support import Child, wait_for

RESULT = {"pipeline_result": {"final_answer": {"user_answer": "ok"}}, "reward": None, "reward_reason": "no_rule"}


async def submit(live: httpx.AsyncClient, user: str = "user-1") -> str:
    response = await live.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer(user))
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


async def sse_clients(gateway: Child, count: int) -> bool:
    return await metric(gateway, "eco2_gateway_sse_clients") == count


async def readers(gateway: Child, count: int) -> bool:
    return await metric(gateway, "eco2_gateway_redis_reader_connections") == count


def summary(messages: list[SseMessage]) -> list[tuple[str | None, str, int]]:
    return [(m.id, m.event, m.json()["progress"]) for m in messages]


async def test_replay_then_live_events_in_order_and_the_stream_closes_after_done(
    live: httpx.AsyncClient, live_gateway: Child, store: JobStore
) -> None:
    job_id = await submit(live)
    await advance(store, job_id, (Stage.VISION,))
    response, messages = await open_stream(live, f"/api/v1/scan/{job_id}/events", headers=bearer())
    received = [await anext(messages), await anext(messages)]  # the replay: what happened before we connected
    assert summary(received) == [("1", "queued", 0), ("2", "vision", 25)]
    await advance(store, job_id, (Stage.RULE, Stage.ANSWER, Stage.REWARD))
    await finish(store, job_id, RESULT)
    async with asyncio.timeout(10):
        received += [m async for m in messages]  # ends only because the server closes the stream
    await response.aclose()
    assert summary(received) == [
        ("1", "queued", 0),
        ("2", "vision", 25),
        ("3", "rule", 50),
        ("4", "answer", 75),
        ("5", "reward", 100),
        ("6", "done", 100),
    ]
    last = received[-1].json()
    assert last == done_event(RESULT)
    assert [m.json()["seq"] for m in received] == [int(m.id or 0) for m in received]
    await wait_for(lambda: sse_clients(live_gateway, 0), what="the stream to be released")


async def test_last_event_id_resumes_without_duplicates(live: httpx.AsyncClient, store: JobStore) -> None:
    job_id = await submit(live)
    await advance(store, job_id, (Stage.VISION, Stage.RULE))
    response, messages = await open_stream(
        live, f"/api/v1/scan/{job_id}/events", headers={**bearer(), "Last-Event-ID": "2"}
    )
    first = await anext(messages)
    assert (first.id, first.event) == ("3", "rule")
    await advance(store, job_id, (Stage.ANSWER, Stage.REWARD))
    await finish(store, job_id, RESULT)
    async with asyncio.timeout(10):
        rest = [m async for m in messages]
    await response.aclose()
    assert [m.id for m in [first, *rest]] == ["3", "4", "5", "6"]
    again = await read_stream(live, f"/api/v1/scan/{job_id}/events?last_event_id=5", headers=bearer())
    assert [m.id for m in again] == ["6"]
    nothing = await read_stream(live, f"/api/v1/scan/{job_id}/events", headers={**bearer(), "Last-Event-ID": "6"})
    assert nothing == [], "a client that has the end gets a closed stream"


async def test_cancel_ends_the_stream_with_cancelled(live: httpx.AsyncClient, store: JobStore) -> None:
    job_id = await submit(live)
    await advance(store, job_id, (Stage.VISION,))
    response, messages = await open_stream(live, f"/api/v1/scan/{job_id}/events", headers=bearer())
    assert [(await anext(messages)).event for _ in range(2)] == ["queued", "vision"]
    cancelled = await live.delete(f"/api/v1/scan/{job_id}", headers=bearer())
    assert cancelled.status_code == 200
    async with asyncio.timeout(10):
        rest = [m async for m in messages]
    await response.aclose()
    assert [(m.event, m.json()["status"]) for m in rest] == [("vision", "cancelled")]
    await advance(store, job_id, (Stage.RULE,))  # a stage finishing late changes nothing
    assert [e.status for e in await store.events(job_id)][-1] == "cancelled"


async def test_a_failed_job_ends_the_stream(live: httpx.AsyncClient, store: JobStore) -> None:
    job_id = await submit(live)
    response, messages = await open_stream(live, f"/api/v1/scan/{job_id}/events", headers=bearer())
    assert (await anext(messages)).event == "queued"
    error = {"code": "model_unavailable", "message": "the model did not answer"}
    await store.transition(
        job_id, "user-1", Stage.VISION, JobStatus.FAILED, data={"error": error}, fields={"error": json.dumps(error)}
    )
    async with asyncio.timeout(10):
        rest = [m async for m in messages]
    await response.aclose()
    assert [m.json()["status"] for m in rest] == ["failed"]
    assert rest[0].json()["data"] == {"error": error}


async def test_heartbeats_keep_a_quiet_stream_alive(live: httpx.AsyncClient) -> None:
    job_id = await submit(live)
    comments = 0
    async with asyncio.timeout(10), live.stream("GET", f"/api/v1/scan/{job_id}/events", headers=bearer()) as r:
        async for line in r.aiter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    break
    assert comments == 2


async def test_two_hundred_clients_share_one_redis_reader(
    live: httpx.AsyncClient,
    live_gateway: Child,
    store: JobStore,
    redis_client: aioredis.Redis,
    make_gateway: MakeGateway,
) -> None:
    # Another gateway on the same Redis (another copy of the pack), its reader busy too: not counted (D16).
    neighbour = await make_gateway()
    await store.create("neighbour-job", "someone")
    watching = await neighbour.context.hub.subscribe("neighbour-job", 0)
    pool_name, reader_name = client_names(LIVE_INSTANCE)
    solo, *jobs = [await submit(live) for _ in range(21)]
    headers = bearer()

    async def follow(job_id: str) -> list[SseMessage]:
        return await read_stream(live, f"/api/v1/scan/{job_id}/events", headers=headers, timeout=60)

    one = asyncio.create_task(follow(solo))
    await wait_for(lambda: sse_clients(live_gateway, 1), what="1 SSE client")
    await wait_for(lambda: readers(live_gateway, 1), what="the reader to connect")
    readers_at_one = await gateway_connections(redis_client, reader_name)
    assert readers_at_one == 1
    assert await metric(live_gateway, "eco2_gateway_redis_reader_connections") == 1
    await advance(store, solo, PIPELINE)
    await finish(store, solo, RESULT)
    assert [m.event for m in await one] == ["queued", "vision", "rule", "answer", "reward", "done"]

    many = [asyncio.create_task(follow(jobs[i % len(jobs)])) for i in range(200)]  # ten clients per job
    await wait_for(lambda: sse_clients(live_gateway, 200), timeout=30, what="200 SSE clients")
    assert await gateway_connections(redis_client, reader_name) == readers_at_one
    assert await metric(live_gateway, "eco2_gateway_redis_reader_connections") == 1
    assert await metric(live_gateway, "eco2_gateway_watched_streams") == len(jobs)
    pooled = await gateway_connections(redis_client, pool_name)
    assert pooled <= 8, f"{pooled} pooled connections: bounded by ECO2_REDIS_MAX_CONNECTIONS, not by clients"
    for job_id in jobs:
        await advance(store, job_id, PIPELINE)
        await finish(store, job_id, RESULT)
    for messages in await asyncio.gather(*many):
        assert [m.id for m in messages] == ["1", "2", "3", "4", "5", "6"]
        assert messages[-1].json()["status"] in TERMINAL
    await wait_for(lambda: sse_clients(live_gateway, 0), what="every stream released")
    neighbour.context.hub.unsubscribe(watching)
    assert await metric(live_gateway, "eco2_gateway_watched_streams") == 0
