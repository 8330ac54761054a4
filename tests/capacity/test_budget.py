"""The shared model budget on the real Redis: the in-flight cap across replicas, leases of a killed replica, 429s."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web

from eco2 import keys
from eco2.capacity import (
    Budget,
    CapacitySettings,
    WaitAnnouncer,
    exhausted_for,
    full_jitter,
    read_budgets,
    reset_seconds,
)
from eco2.errors import RateLimited
from eco2.model import ModelClient
from eco2.observability import FunctionMetrics
from tests.support import REDIS_TEST_URL

MODEL = "m"
REPLY = {"choices": [{"message": {"content": "hello"}}]}


@dataclass
class Counter:
    """What the counting model server saw: calls in flight now, the most at once, calls answered, 429s sent."""

    now: int = 0
    most: int = 0
    answered: int = 0
    refuse_next: int = 0
    refused: int = 0
    seen_at: list[float] = field(default_factory=list)


async def _serve(counter: Counter) -> tuple[web.AppRunner, str]:
    async def complete(request: web.Request) -> web.Response:
        await request.read()
        counter.seen_at.append(time.monotonic())
        if counter.refuse_next > 0:
            counter.refuse_next -= 1
            counter.refused += 1
            body = {"error": {"type": "requests", "message": "Rate limit reached"}}
            return web.json_response(body, status=429, headers={"retry-after-ms": "300", "retry-after": "1"})
        counter.now += 1
        counter.most = max(counter.most, counter.now)
        try:
            await asyncio.sleep(0.05)
        finally:
            counter.now -= 1
        counter.answered += 1
        return web.Response(body=json.dumps(REPLY), content_type="application/json")

    async def stream(request: web.Request) -> web.StreamResponse:
        # A streamed reply: in flight at the provider until its last chunk, as a provider counts concurrency.
        await request.read()
        counter.now += 1
        counter.most = max(counter.most, counter.now)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        try:
            await response.prepare(request)
            for piece in ("hel", "lo"):
                chunk = {"choices": [{"delta": {"content": piece}}]}
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                await asyncio.sleep(0.05)
            await response.write(b"data: [DONE]\n\n")
        finally:
            counter.now -= 1
        counter.answered += 1
        return response

    async def route(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return await (stream(request) if body.get("stream") else complete(request))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1"


@pytest.fixture
async def server() -> AsyncIterator[tuple[Counter, str]]:
    counter = Counter()
    runner, url = await _serve(counter)
    yield counter, url
    await runner.cleanup()


async def _replica(url: str, settings: CapacitySettings) -> tuple[ModelClient, aioredis.Redis]:
    """A model client with its own Redis connection, as one replica of a stage has."""
    client = aioredis.from_url(REDIS_TEST_URL, decode_responses=True)
    budget = Budget(client, settings, prefix="eco2:test:capacity")
    return ModelClient(base_url=url, api_key="k", timeout_seconds=10, budget=budget), client


async def _calls(model: ModelClient, count: int) -> list[str]:
    messages = [{"role": "user", "content": "hi"}]
    return list(
        await asyncio.gather(
            *(
                model._complete(model=MODEL, stage="chat", messages=messages, response_format=None, job_id=f"j{n}")
                for n in range(count)
            )
        )
    )


async def test_three_replicas_never_exceed_the_in_flight_cap(
    redis_client: aioredis.Redis, server: tuple[Counter, str]
) -> None:
    counter, url = server
    settings = CapacitySettings(max_in_flight=3, wait_seconds=30)
    replicas = [await _replica(url, settings) for _ in range(3)]
    try:
        results = await asyncio.gather(*(_calls(model, 20) for model, _ in replicas))
    finally:
        for model, client in replicas:
            await model.aclose()
            await client.aclose()
    assert all(text == "hello" for texts in results for text in texts)
    assert counter.answered == 60
    assert counter.most == 3  # the cap was reached (so the test could fail) and never exceeded


async def test_a_streamed_call_holds_its_slot_until_its_stream_ends(
    redis_client: aioredis.Redis, server: tuple[Counter, str]
) -> None:
    counter, url = server
    model, client = await _replica(url, CapacitySettings(max_in_flight=2, wait_seconds=30))
    messages = [{"role": "user", "content": "hi"}]
    pieces: list[str] = []

    async def on_text(piece: str) -> None:
        pieces.append(piece)

    try:
        texts = await asyncio.gather(
            *(
                model._complete(
                    model=MODEL, stage="chat", messages=messages, response_format=None, job_id=f"s{n}", on_text=on_text
                )
                for n in range(8)
            )
        )
    finally:
        await model.aclose()
        await client.aclose()
    assert texts == ["hello"] * 8
    assert counter.answered == 8
    assert counter.most == 2  # two streams at once, never a third while one was still streaming


async def test_without_a_limit_calls_go_out_together(server: tuple[Counter, str]) -> None:
    counter, url = server
    model = ModelClient(base_url=url, api_key="k", timeout_seconds=10)
    try:
        await _calls(model, 10)
    finally:
        await model.aclose()
    assert counter.most > 3


async def test_a_429_pauses_and_the_call_goes_again_inside_the_budget(
    redis_client: aioredis.Redis, server: tuple[Counter, str]
) -> None:
    counter, url = server
    counter.refuse_next = 1
    model, client = await _replica(url, CapacitySettings(max_in_flight=2, wait_seconds=10))
    try:
        started = time.monotonic()
        assert await _calls(model, 1) == ["hello"]
    finally:
        await model.aclose()
        await client.aclose()
    assert counter.refused == 1
    assert counter.answered == 1
    # The second try waited for the provider's retry-after-ms (300 ms, shared pause) before going out.
    assert counter.seen_at[1] - counter.seen_at[0] >= 0.25
    assert time.monotonic() - started < 5


async def test_the_wait_ends_in_rate_limited_past_the_stage_budget(redis_client: aioredis.Redis) -> None:
    budget = Budget(redis_client, CapacitySettings(max_in_flight=1, lease_seconds=30), prefix="eco2:test:capacity")
    held = await budget.acquire(MODEL)
    with pytest.raises(RateLimited):
        await budget.acquire(MODEL, wait_seconds=0.2)
    await budget.release(held)
    again = await budget.acquire(MODEL, wait_seconds=0.2)
    await budget.release(again)


HOLDER = """
import asyncio, sys
import redis.asyncio as aioredis
from eco2.capacity import (
    Budget,
    CapacitySettings,
    exhausted_for,
    full_jitter,
    read_budgets,
    reset_seconds,
)

async def main() -> None:
    client = aioredis.from_url(sys.argv[1])
    budget = Budget(client, CapacitySettings(max_in_flight=2, lease_seconds=1.5), prefix="eco2:test:capacity")
    await budget.acquire("m")
    await budget.acquire("m")
    print("held", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_killed_replicas_slots_come_back_within_the_lease(redis_client: aioredis.Redis) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, REDIS_TEST_URL], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "held\n"
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    budget = Budget(redis_client, CapacitySettings(max_in_flight=2, lease_seconds=1.5), prefix="eco2:test:capacity")
    assert (await budget.try_acquire(MODEL, "probe"))[0] > 0  # both slots still held by the dead replica's leases
    await budget.acquire(MODEL, wait_seconds=5)
    assert time.monotonic() - killed <= 1.5 + 0.5


@pytest.mark.parametrize(
    ("value", "seconds"), [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("2", 2.0)]
)
def test_reset_durations_are_read(value: str, seconds: float) -> None:
    assert reset_seconds(value) == pytest.approx(seconds)


def test_unreadable_reset_is_none() -> None:
    assert reset_seconds("soon") is None


def test_only_a_used_up_limit_pauses() -> None:
    room = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}
    assert exhausted_for(room) is None
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "500ms"}
    spent |= {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}
    assert exhausted_for(spent) == pytest.approx(2.0)


def test_a_used_up_request_limit_pauses_until_one_request_comes_back() -> None:
    # 2 a second, both used: the limit is whole again in 1 s, and one request comes back in 0.5 s.
    used_up = {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0"}
    used_up["x-ratelimit-reset-requests"] = "1s"
    assert exhausted_for(used_up) == pytest.approx(0.5)
    # A budget that already spaces its calls 0.501 s apart paces at that limit: 0 remaining is no news.
    assert exhausted_for(used_up, paced_seconds=0.501) is None
    # The provider cut to one call per 2 s: slower than the budget's pace, so it pauses.
    cut = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    assert exhausted_for(cut, paced_seconds=0.501) == pytest.approx(2.0)


async def test_a_used_up_limit_pauses_every_replica_until_its_reset(redis_client: aioredis.Redis) -> None:
    budget = Budget(redis_client, CapacitySettings(max_in_flight=5), prefix="eco2:test:capacity")
    other = Budget(redis_client, CapacitySettings(max_in_flight=5), prefix="eco2:test:capacity")
    await budget.learn(MODEL, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "400ms"})
    wait_ms, *_ = await other.try_acquire(MODEL, "probe")
    assert 0 < wait_ms <= 400
    await other.acquire(MODEL, wait_seconds=3)


async def test_new_scans_leave_slots_for_work_past_vision(redis_client: aioredis.Redis) -> None:
    budget = Budget(redis_client, CapacitySettings(max_in_flight=5, new_work_share=0.6), prefix="eco2:test:capacity")
    scans = [await budget.acquire(MODEL, stage="vision", wait_seconds=1) for _ in range(3)]
    assert (await budget.try_acquire(MODEL, "fourth-scan", stage="vision"))[0] > 0
    answers = [await budget.acquire(MODEL, stage="answer", wait_seconds=1) for _ in range(2)]
    assert (await budget.try_acquire(MODEL, "third-answer", stage="answer"))[0] > 0
    for lease in scans + answers:
        await budget.release(lease)


async def test_metrics_see_waits_slots_and_refusals(redis_client: aioredis.Redis) -> None:
    metrics = FunctionMetrics("answer")
    budget = Budget(redis_client, CapacitySettings(max_in_flight=1), prefix="eco2:test:capacity", observer=metrics)
    lease = await budget.acquire(MODEL)
    assert metrics.registry.get_sample_value("eco2_model_capacity_slots", {"function": "answer", "model": MODEL}) == 1
    await budget.release(lease)
    await budget.refused(MODEL, 0.01)
    labels = {"function": "answer", "model": MODEL}
    assert metrics.registry.get_sample_value("eco2_model_capacity_slots", labels) == 0
    assert metrics.registry.get_sample_value("eco2_model_provider_refusals_total", labels) == 1
    assert metrics.registry.get_sample_value("eco2_model_capacity_wait_seconds_count", labels) == 1


async def test_status_reads_each_models_budget(redis_client: aioredis.Redis) -> None:
    budget = Budget(redis_client, CapacitySettings(max_in_flight=4), prefix="eco2:test:capacity")
    lease = await budget.acquire(MODEL)
    await budget.pause(MODEL, 30)
    reader = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        budgets = read_budgets(reader, CapacitySettings(max_in_flight=4), prefix="eco2:test:capacity")
    finally:
        reader.close()
    assert [(b["model"], b["in_flight"]) for b in budgets] == [(MODEL, 1)]
    assert 25 < budgets[0]["paused_for"] <= 30
    await budget.release(lease)


def test_full_jitter_spreads_waits_between_zero_and_the_ceiling() -> None:
    waits = [full_jitter(2.0) for _ in range(500)]
    assert all(0.0 <= wait <= 2.0 for wait in waits)
    assert min(waits) < 0.2
    assert max(waits) > 1.8


async def test_a_waiting_call_tells_its_job_without_changing_its_status(
    redis_client: aioredis.Redis, server: tuple[Counter, str]
) -> None:
    _, url = server
    await redis_client.hset(keys.job("j0"), mapping={"status": "running", "progress": "40", "seq": "3"})
    model, client = await _replica(url, CapacitySettings(max_in_flight=1, wait_seconds=10))
    model._announcer = WaitAnnouncer(redis_client)
    budget = Budget(redis_client, CapacitySettings(max_in_flight=1, lease_seconds=30), prefix="eco2:test:capacity")
    held = await budget.acquire(MODEL)
    try:
        call = asyncio.create_task(_calls(model, 1))
        deadline = time.monotonic() + 5
        while not await redis_client.hexists(keys.job("j0"), "capacity_wait"):
            assert time.monotonic() < deadline, "the job was never told it waits"
            await asyncio.sleep(0.01)
        await budget.release(held)
        assert await call == ["hello"]
    finally:
        await model.aclose()
        await client.aclose()
    entries = cast(list[tuple[str, dict[str, str]]], await redis_client.xrange(keys.job_events("j0")))
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields["status"] == "running"
    assert fields["progress"] == "40"
    assert fields["seq"] == "4"
    assert json.loads(fields["data"])["waiting_for_capacity"]["model"] == MODEL
    assert await redis_client.hget(keys.job("j0"), "status") == "running"
    # The call got its slot: the job no longer says it waits.
    assert not await redis_client.hexists(keys.job("j0"), "capacity_wait")


async def test_a_call_that_did_not_queue_costs_one_round_trip_announcer_or_not(server: tuple[Counter, str]) -> None:
    _, url = server
    client = aioredis.from_url(REDIS_TEST_URL, decode_responses=True)
    sent: list[object] = []
    original: Callable[..., Awaitable[object]] = client.execute_command

    async def counted(*args: object, **options: object) -> object:
        sent.append(args[0])
        return await original(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    budget = Budget(client, CapacitySettings(requests_per_minute=600_000), prefix="eco2:test:capacity")
    model = ModelClient(base_url=url, api_key="k", timeout_seconds=10, budget=budget, announcer=WaitAnnouncer(client))
    try:
        await _calls(model, 1)
        sent.clear()
        assert await _calls(model, 1) == ["hello"]
    finally:
        await model.aclose()
        await client.aclose()
    assert sent == ["EVALSHA"]  # the slot's script only: no release (no in-flight cap), no word to the job
