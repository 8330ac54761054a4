"""JobStore against the real Redis: atomic, idempotent transitions, checkpoints, run-once, TTLs; a stage's output
written together with its transition (eco2.stage_work.run_once)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from pydantic import BaseModel

from eco2 import keys
from eco2.errors import StoreUnavailable, TransientError
from eco2.jobs import JobStatus, JobStore, Stage, Transition, TransitionOutcome
from eco2.stage_work import Change, run_once
from tests.redis_proxy import StallableRedis
from tests.support import REDIS_TEST_URL


class Out(BaseModel):
    value: int


async def once(
    store: JobStore,
    job_id: str,
    stage: Stage,
    compute: Callable[[], Awaitable[Out]],
    *,
    timeout_seconds: float,
    unless_ended: bool = False,
) -> Out | None:
    """A stage's output computed at most once (eco2.checkpoints, under eco2.stage_work.run_once), without a
    transition; None for an ended job when `unless_ended`."""
    stored = await store.checkpoints.once(
        job_id, stage.value, Out, compute, timeout_seconds=timeout_seconds, unless_ended=unless_ended
    )
    return None if stored is None else stored.value


async def test_create_writes_job_and_queued_event(store: JobStore) -> None:
    created = await store.create("job1", "user1", priority="high")
    assert created.outcome is TransitionOutcome.APPLIED
    job = await store.get("job1")
    assert job is not None
    assert (job["status"], job["stage"], job["progress"], job["user_id"], job["priority"]) == (
        "queued",
        "queued",
        "0",
        "user1",
        "high",
    )
    [event] = await store.events("job1")
    assert (event.seq, event.stage, event.status, event.progress) == (1, "queued", "queued", 0)


async def test_repeated_transition_is_a_duplicate_and_adds_no_event(store: JobStore) -> None:
    await store.create("job1", "u")
    first = await store.transition("job1", "u", Stage.VISION, JobStatus.RUNNING, data={"a": 1})
    again = await store.transition("job1", "u", Stage.VISION, JobStatus.RUNNING, data={"a": 2})
    assert first.outcome is TransitionOutcome.APPLIED
    assert (again.outcome, again.seq) == (TransitionOutcome.DUPLICATE, first.seq)
    events = await store.events("job1")
    assert [(e.stage, e.progress, e.data) for e in events] == [("queued", 0, None), ("vision", 25, {"a": 1})]


async def test_concurrent_identical_transitions_record_one_event(store: JobStore) -> None:
    await store.create("job1", "u")
    results = await asyncio.gather(*(store.transition("job1", "u", Stage.RULE, JobStatus.RUNNING) for _ in range(20)))
    assert sum(r.outcome is TransitionOutcome.APPLIED for r in results) == 1
    assert len(await store.events("job1")) == 2


async def test_ended_job_refuses_new_transitions(store: JobStore) -> None:
    await store.create("job1", "u")
    await store.transition("job1", "u", Stage.VISION, JobStatus.CANCELLED, message="cancelled")
    refused = await store.transition("job1", "u", Stage.ANSWER, JobStatus.RUNNING)
    assert refused.outcome is TransitionOutcome.REFUSED
    assert await store.status("job1") is JobStatus.CANCELLED
    assert [e.status for e in await store.events("job1")] == ["queued", "cancelled"]


async def test_progress_never_goes_backwards(store: JobStore) -> None:
    await store.create("job1", "u")
    await store.transition("job1", "u", Stage.ANSWER, JobStatus.RUNNING)
    await store.transition("job1", "u", Stage.VISION, JobStatus.RUNNING)
    job = await store.get("job1")
    assert job is not None
    assert job["progress"] == "75"


async def test_events_after_seq_resume_without_duplicates(store: JobStore) -> None:
    await store.create("job1", "u")
    for stage in (Stage.VISION, Stage.RULE, Stage.ANSWER):
        await store.transition("job1", "u", stage, JobStatus.RUNNING)
    assert [e.seq for e in await store.events("job1", after_seq=2)] == [3, 4]


async def test_every_key_has_a_ttl(store: JobStore, redis_client: aioredis.Redis) -> None:
    await store.create("job1", "u")
    await store.checkpoints.put("job1", Stage.VISION.value, Out(value=1))
    for key in (keys.job("job1"), keys.job_events("job1"), keys.job_checkpoints("job1")):
        ttl = await redis_client.ttl(key)
        assert 0 < ttl <= 3600, key


async def test_first_checkpoint_wins(store: JobStore) -> None:
    assert await store.checkpoints.put("job1", Stage.VISION.value, Out(value=1)) == Out(value=1)
    assert await store.checkpoints.put("job1", Stage.VISION.value, Out(value=2)) == Out(value=1)
    assert await store.checkpoints.get("job1", Stage.VISION.value, Out) == Out(value=1)


async def test_once_computes_once_across_concurrent_calls(store: JobStore) -> None:
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return Out(value=calls)

    results = await asyncio.gather(*(once(store, "job1", Stage.ANSWER, compute, timeout_seconds=5) for _ in range(10)))
    assert calls == 1
    assert results == [Out(value=1)] * 10
    assert await once(store, "job1", Stage.ANSWER, compute, timeout_seconds=5) == Out(value=1)
    assert calls == 1


@pytest.mark.parametrize("ended", [JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED])
async def test_once_unless_ended_drops_an_ended_job_without_computing(
    store: JobStore, redis_client: aioredis.Redis, ended: JobStatus
) -> None:
    await store.create("job1", "u")
    await store.transition("job1", "u", Stage.VISION, ended)

    async def compute() -> Out:
        raise AssertionError("an ended job's stage must not compute")

    assert await once(store, "job1", Stage.RULE, compute, timeout_seconds=1, unless_ended=True) is None
    assert not await redis_client.exists(keys.stage_lease("job1", "rule"))


async def test_once_unless_ended_computes_once_and_releases_its_lease(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    await store.create("job1", "u")
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        return Out(value=5)

    for _ in range(2):
        assert await once(store, "job1", Stage.RULE, compute, timeout_seconds=1, unless_ended=True) == Out(value=5)
    assert calls == 1
    assert not await redis_client.exists(keys.stage_lease("job1", "rule"))  # released with the checkpoint write


async def test_once_failure_releases_the_lease_for_the_retry(store: JobStore) -> None:
    async def fail() -> Out:
        raise TransientError("boom", "model down")

    async def succeed() -> Out:
        return Out(value=7)

    with pytest.raises(TransientError):
        await once(store, "job1", Stage.VISION, fail, timeout_seconds=5)
    assert await once(store, "job1", Stage.VISION, succeed, timeout_seconds=0.5) == Out(value=7)


async def test_once_waiter_gives_up_as_transient_when_the_holder_is_stuck(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(keys.stage_lease("job1", "vision"), "someone-else", px=60_000)

    async def compute() -> Out:
        raise AssertionError("must not run while another delivery holds the lease")

    with pytest.raises(TransientError) as caught:
        await once(store, "job1", Stage.VISION, compute, timeout_seconds=0.3)
    assert caught.value.code == "stage_busy"


async def test_unreachable_redis_is_a_transient_store_error() -> None:
    dead = JobStore(aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), ttl_seconds=60)
    with pytest.raises(StoreUnavailable):
        await dead.create("job1", "u")
    await dead.aclose()


@pytest.fixture
async def proxy(redis_client: aioredis.Redis) -> AsyncIterator[StallableRedis]:
    """A pass-through to the test Redis that the test can stall (the DB is flushed by redis_client first)."""
    stallable = await StallableRedis(REDIS_TEST_URL).start()
    yield stallable
    await stallable.aclose()


@asynccontextmanager
async def store_behind(proxy: StallableRedis, *, grace: float) -> AsyncIterator[JobStore]:
    client = aioredis.from_url(proxy.url, decode_responses=True, socket_timeout=0.3)
    try:
        yield JobStore(client, ttl_seconds=60, store_grace_seconds=grace)
    finally:
        await client.aclose()


async def test_a_redis_stall_keeps_the_computed_output_and_stores_it_when_redis_is_back(
    redis_client: aioredis.Redis, proxy: StallableRedis
) -> None:
    """A paid-for model answer survives a short Redis stall: the write is retried, the model is not called again."""
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        asyncio.get_running_loop().call_soon(proxy.stall)  # Redis stalls as the answer comes back
        asyncio.get_running_loop().call_later(1.0, proxy.resume)
        return Out(value=42)

    async with store_behind(proxy, grace=5) as stalling:
        assert await once(stalling, "job1", Stage.VISION, compute, timeout_seconds=5) == Out(value=42)
    assert calls == 1
    assert await JobStore(redis_client, ttl_seconds=60).checkpoints.get("job1", Stage.VISION.value, Out) == Out(
        value=42
    )


async def test_an_output_not_stored_within_the_grace_is_reused_by_the_next_delivery(
    redis_client: aioredis.Redis, proxy: StallableRedis
) -> None:
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        proxy.stall()
        return Out(value=calls)

    async with store_behind(proxy, grace=0.5) as stalling:
        with pytest.raises(StoreUnavailable):
            await once(stalling, "job1", Stage.ANSWER, compute, timeout_seconds=5)
        proxy.resume()
        assert await once(stalling, "job1", Stage.ANSWER, compute, timeout_seconds=5) == Out(value=1)
    assert calls == 1
    assert await JobStore(redis_client, ttl_seconds=60).checkpoints.get("job1", Stage.ANSWER.value, Out) == Out(value=1)


async def test_transitions_never_create_a_job_and_expected_stage_guards(store: JobStore) -> None:
    missing = await store.transition("ghost", "u", Stage.VISION, JobStatus.FAILED)
    assert missing.outcome is TransitionOutcome.MISSING
    assert await store.get("ghost") is None
    await store.create("job1", "u")
    await store.transition("job1", "u", Stage.VISION, JobStatus.RUNNING)
    stale = await store.transition("job1", "u", Stage.VISION, JobStatus.FAILED, expect_stage=Stage.QUEUED)
    assert (stale.outcome, stale.status, stale.stage) == (TransitionOutcome.REFUSED, "running", "vision")


def ruled(output: Out) -> Change:
    return Change("u", Stage.RULE, f"matched {output.value}", {"value": output.value})


async def rule_once(store: JobStore, compute: Callable[[], Awaitable[Out]]) -> tuple[Out, Transition] | None:
    return await run_once(store, "job1", Stage.RULE, Out, compute, ruled, timeout_seconds=5)


async def test_a_computed_output_and_its_transition_are_written_in_one_step(
    store: JobStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create("job1", "u")

    async def separately(*_: object, **__: object) -> Transition:
        raise AssertionError("the transition goes with the output's write, not in a call of its own")

    monkeypatch.setattr(store, "transition", separately)

    async def compute() -> Out:
        return Out(value=5)

    stored = await rule_once(store, compute)
    assert stored is not None
    output, recorded = stored
    assert (output, recorded.outcome, recorded.stage) == (Out(value=5), TransitionOutcome.APPLIED, "rule")
    assert recorded.passes_on(Stage.RULE)
    assert await store.checkpoints.get("job1", Stage.RULE.value, Out) == Out(value=5)
    assert not await redis_client.exists(keys.stage_lease("job1", "rule"))  # released in the same step
    assert [(e.stage, e.status, e.message, e.data) for e in await store.events("job1")][-1] == (
        "rule",
        "running",
        "matched 5",
        {"value": 5},
    )


async def test_a_redelivery_records_its_transition_from_the_stored_output_once(store: JobStore) -> None:
    await store.create("job1", "u")
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        return Out(value=calls)

    first, again = await rule_once(store, compute), await rule_once(store, compute)
    assert first is not None
    assert again is not None
    assert calls == 1
    assert (again[0], again[1].outcome, again[1].seq) == (Out(value=1), TransitionOutcome.DUPLICATE, first[1].seq)
    assert again[1].passes_on(Stage.RULE), "the first delivery's reply may have been lost"
    assert len(await store.events("job1")) == 2


async def test_an_output_stored_first_by_another_delivery_is_the_one_recorded(store: JobStore) -> None:
    await store.create("job1", "u")

    async def compute() -> Out:
        # A delivery whose lease had expired stored its own output meanwhile: first writer wins.
        await store.checkpoints.put("job1", Stage.RULE.value, Out(value=2))
        return Out(value=1)

    stored = await rule_once(store, compute)
    assert stored is not None
    assert (stored[0], stored[1].outcome) == (Out(value=2), TransitionOutcome.APPLIED)
    assert (await store.events("job1"))[-1].data == {"value": 2}


async def test_a_job_that_ends_while_its_stage_runs_keeps_the_output_and_records_nothing(store: JobStore) -> None:
    await store.create("job1", "u")

    async def compute() -> Out:
        await store.cancel("job1")
        return Out(value=3)

    stored = await rule_once(store, compute)
    assert stored is not None
    assert stored[1].outcome is TransitionOutcome.REFUSED
    assert not stored[1].passes_on(Stage.RULE)
    assert await store.checkpoints.get("job1", Stage.RULE.value, Out) == Out(value=3)
    assert [e.status for e in await store.events("job1")] == ["queued", "cancelled"]


async def test_an_event_for_a_job_never_created_still_computes_and_creates_nothing(store: JobStore) -> None:
    async def compute() -> Out:
        return Out(value=4)

    stored = await rule_once(store, compute)
    assert stored is not None
    assert (stored[0], stored[1].outcome) == (Out(value=4), TransitionOutcome.MISSING)
    assert stored[1].passes_on(Stage.RULE)
    assert await store.get("job1") is None


async def test_a_redis_stall_on_the_combined_write_keeps_the_output_and_records_it_once_when_back(
    redis_client: aioredis.Redis, proxy: StallableRedis
) -> None:
    await JobStore(redis_client, ttl_seconds=60).create("job1", "u")
    calls = 0

    async def compute() -> Out:
        nonlocal calls
        calls += 1
        asyncio.get_running_loop().call_soon(proxy.stall)
        asyncio.get_running_loop().call_later(1.0, proxy.resume)
        return Out(value=42)

    async with store_behind(proxy, grace=5) as stalling:
        stored = await rule_once(stalling, compute)
    assert stored is not None
    assert (stored[0], calls) == (Out(value=42), 1)
    assert stored[1].outcome in (TransitionOutcome.APPLIED, TransitionOutcome.DUPLICATE)
    assert stored[1].passes_on(Stage.RULE)
    events = await JobStore(redis_client, ttl_seconds=60).events("job1")
    assert [(e.stage, e.data) for e in events] == [("queued", None), ("rule", {"value": 42})]
