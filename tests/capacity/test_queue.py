"""The budget's queue on the real Redis: the order calls get capacity in, giving up early, what is learned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import redis.asyncio as aioredis

from eco2.capacity import CALL_PRIORITY, POLL_SECONDS, Budget, CapacitySettings
from eco2.errors import RateLimited

MODEL = "m"
PREFIX = "eco2:test:capacity"


def _budget(client: aioredis.Redis, **settings: int) -> Budget:
    return Budget(client, CapacitySettings(**settings), prefix=PREFIX)


async def _taken_in_order(budget: Budget, calls: list[tuple[str, str, str]]) -> list[str]:
    """Starts the calls (name, stage, priority) a few ms apart, all waiting; the names in the order they got a slot."""
    order: list[str] = []

    async def call(name: str, stage: str, priority: str) -> None:
        CALL_PRIORITY.set(priority)
        await budget.acquire(MODEL, stage=stage, wait_seconds=20)
        order.append(name)

    tasks = []
    for name, stage, priority in calls:
        tasks.append(asyncio.create_task(call(name, stage, priority)))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 20)
    return order


async def test_calls_get_capacity_in_queue_order_vip_then_work_past_vision_then_new_scans(
    redis_client: aioredis.Redis,
) -> None:
    # 600 a minute: one call every 101 ms. The first call takes the free slot; the rest queue behind it.
    budget = _budget(redis_client, requests_per_minute=600)
    calls = [("scan-1", "vision", "normal"), ("scan-2", "vision", "normal"), ("scan-3", "vision", "normal")]
    calls += [("answer-1", "answer", "normal"), ("scan-4", "vision", "normal"), ("vip-scan", "vision", "high")]
    calls += [("chat-1", "chat", "normal")]
    order = await _taken_in_order(budget, calls)
    assert order == ["scan-1", "vip-scan", "answer-1", "chat-1", "scan-2", "scan-3", "scan-4"]


async def test_a_call_whose_turn_comes_too_late_answers_at_once_and_leaves_the_queue(
    redis_client: aioredis.Redis,
) -> None:
    budget = _budget(redis_client, requests_per_minute=60)  # one call a second
    await budget.acquire(MODEL)
    waiting = [asyncio.create_task(budget.acquire(MODEL, wait_seconds=30)) for _ in range(3)]
    try:
        await _until(lambda: redis_client.zcard(f"{PREFIX}:{{{MODEL}}}:queue"), 3)
        started = time.monotonic()
        with pytest.raises(RateLimited) as refused:
            await budget.acquire(MODEL, wait_seconds=2)  # three calls ahead: its turn is ~4 s away
        assert time.monotonic() - started < 1.0  # told at once, not after waiting 2 s for nothing
        assert refused.value.retry_after >= 3
        assert await redis_client.zcard(f"{PREFIX}:{{{MODEL}}}:queue") == 3  # its place was given up
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    # Cancelled calls leave the queue too.
    assert await redis_client.zcard(f"{PREFIX}:{{{MODEL}}}:queue") == 0


async def test_a_dead_callers_place_stops_holding_up_the_queue(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client, requests_per_minute=600)
    await budget.acquire(MODEL)
    # A call that queued and was never heard of again (its replica was SIGKILLed): first in line.
    wait_ms, ahead, _ = await budget.try_acquire(MODEL, "dead-call")
    assert (wait_ms > 0, ahead) == (True, 0)
    started = time.monotonic()
    await budget.acquire(MODEL, wait_seconds=POLL_SECONDS + 5)
    # It got the slot once the dead call's place lapsed: at most a poll interval plus the grace after it queued.
    assert time.monotonic() - started <= POLL_SECONDS + 2.5


async def test_a_refusal_teaches_the_providers_pace_for_a_while(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client, requests_per_minute=600)  # 100.2 ms apart as configured
    learned = f"{PREFIX}:{{{MODEL}}}:interval"
    # A refusal whose headers say nothing: the interval doubles, once for calls refused together.
    await budget.refused(MODEL, 0.001)
    assert await _learned(redis_client) == pytest.approx(200.4)
    await budget.refused(MODEL, 0.001)
    assert await _learned(redis_client) == pytest.approx(200.4)
    # The provider says it allows one request per 2 s: that pace is learned, and kept 10 s past the refusal.
    cut = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}
    await budget.refused(MODEL, 0.001, cut)
    assert await _learned(redis_client) == pytest.approx(2004.0)
    assert 9000 < await redis_client.pttl(learned) <= 10000
    # A refusal at the budget's own pace (the call arrived early on the network's jitter) teaches nothing.
    jitter = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0"}
    await budget.refused(MODEL, 0.001, jitter | {"x-ratelimit-reset-requests": "1s"})
    assert await _learned(redis_client) == pytest.approx(2004.0)
    await asyncio.sleep(0.01)
    await budget.acquire(MODEL, wait_seconds=5)
    wait_ms, *_ = await budget.try_acquire(MODEL, "next")
    assert 1900 < wait_ms <= 2004  # the next call waits the learned interval, not the configured 100.2 ms
    await redis_client.pexpire(learned, 1)  # as if 10 s had passed
    await asyncio.sleep(0.01)
    await budget.acquire(MODEL, wait_seconds=5)
    wait_ms, *_ = await budget.try_acquire(MODEL, "after")
    assert wait_ms <= 101  # back to the configured rate


async def test_a_reply_that_shows_a_slower_provider_pauses_and_teaches_its_pace(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client, requests_per_minute=120)  # 501 ms apart
    steady = {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    await budget.learn(MODEL, steady)  # at the budget's own pace: nothing to learn, no pause
    assert (await budget.try_acquire(MODEL, "free"))[0] == 0
    slower = {
        "x-ratelimit-limit-requests": "1",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    }
    await budget.learn(MODEL, slower)
    assert await _learned(redis_client) == pytest.approx(2004.0)
    wait_ms, *_ = await budget.try_acquire(MODEL, "paused")
    assert 1900 < wait_ms <= 2004


async def test_tokens_per_minute_space_calls_by_their_tokens(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client, tokens_per_minute=60_000)  # 1 ms a token
    await budget.acquire(MODEL, tokens=800)
    wait_ms, *_ = await budget.try_acquire(MODEL, "next", tokens=800)
    assert 700 < wait_ms <= 800
    assert budget.tokens_of(text_chars=400, images=1) == 100 + 765 + 500


async def _learned(client: aioredis.Redis) -> float:
    return float(cast(str, await client.get(f"{PREFIX}:{{{MODEL}}}:interval")))


async def _until(read: Callable[[], Awaitable[int]], wanted: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while await read() != wanted:
        assert time.monotonic() < deadline, f"never reached {wanted}"
        await asyncio.sleep(0.01)


async def test_a_pace_learned_from_a_passing_cut_never_makes_a_wait_hopeless(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client, requests_per_minute=600)  # 100.2 ms apart as configured
    await budget.acquire(MODEL)
    waiting = [asyncio.create_task(budget.acquire(MODEL, wait_seconds=30)) for _ in range(5)]
    try:
        await _until(lambda: redis_client.zcard(f"{PREFIX}:{{{MODEL}}}:queue"), 5)
        cut = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}
        await budget.refused(MODEL, 0.001, cut | {"x-ratelimit-reset-requests": "1s"})  # 1 s a request for now
        wait_ms, ahead, patient_ms = await budget.try_acquire(MODEL, "sixth")
        assert ahead == 5
        assert wait_ms > 5000  # six calls at the learned pace
        assert patient_ms < 1000  # at the configured pace: its turn is well within a 2 s budget
        # So it waits in the queue rather than answering 429 at once.
        sixth = asyncio.create_task(budget.acquire(MODEL, wait_seconds=2))
        await asyncio.sleep(0.3)
        assert not sixth.done()
        sixth.cancel()
        await asyncio.gather(sixth, return_exceptions=True)
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
