"""The shared stream reader: wake-ups, fan-out, dropping slow clients, surviving a lost Redis connection."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from eco2.gateway.context import client_names
from eco2.jobs import JobStatus, JobStore, Stage, StreamEvent
from tests.gateway.conftest import Gateway, MakeGateway
from tests.support import wait_for


async def next_event(subscription: object) -> StreamEvent | None:
    async with asyncio.timeout(5):
        return await subscription.next()  # type: ignore[attr-defined, no-any-return]


async def blocked_reader(redis_client: aioredis.Redis, gateway: Gateway) -> int | None:
    """The id of the gateway's reader connection while it sits in XREAD BLOCK."""
    _, reader = client_names(gateway.context.settings.instance)
    for client in await redis_client.client_list():
        if client.get("name") == reader and client.get("cmd") == "xread" and "b" in client["flags"]:
            return int(client["id"])
    return None


async def test_a_new_job_wakes_the_blocked_reader_at_once(
    make_gateway: MakeGateway, store: JobStore, redis_client: aioredis.Redis
) -> None:
    gateway = await make_gateway(ECO2_SSE_BLOCK_MS="60000")  # only the wake-up can make this fast
    hub = gateway.context.hub
    await store.create("first", "u")
    first = await hub.subscribe("first", 0)
    assert (await next_event(first)).seq == 1  # type: ignore[union-attr]
    await store.create("second", "u")
    await wait_for(lambda: blocked_reader(redis_client, gateway), what="the reader to block on the first job")
    second = await hub.subscribe("second", 0)
    event = await next_event(second)
    assert event is not None
    assert (event.seq, event.stage) == (1, "queued")


async def test_every_subscriber_of_a_job_gets_each_event_once(make_gateway: MakeGateway, store: JobStore) -> None:
    hub = (await make_gateway()).context.hub
    await store.create("job", "u")
    subscribers = [await hub.subscribe("job", 1) for _ in range(5)]
    await store.transition("job", "u", Stage.VISION, JobStatus.RUNNING)
    for subscription in subscribers:
        event = await next_event(subscription)
        assert event is not None
        assert (event.seq, event.stage) == (2, "vision")
    assert hub.subscribers == 5
    for subscription in subscribers:
        hub.unsubscribe(subscription)
    assert hub.subscribers == 0


async def test_a_slow_client_is_dropped_and_the_others_keep_going(make_gateway: MakeGateway, store: JobStore) -> None:
    gateway = await make_gateway(ECO2_SSE_QUEUE_SIZE="2")
    hub = gateway.context.hub
    await store.create("job", "u")
    slow = await hub.subscribe("job", 1)
    fast = await hub.subscribe("job", 1)
    seen: list[int] = []
    for stage in (Stage.VISION, Stage.RULE, Stage.ANSWER):
        await store.transition("job", "u", stage, JobStatus.RUNNING)
        event = await next_event(fast)
        assert event is not None
        seen.append(event.seq)
    assert seen == [2, 3, 4]
    await wait_for(lambda: asyncio.sleep(0, slow.dropped), what="the slow client to be dropped")
    assert await next_event(slow) is None, "its stream ends (it resumes with Last-Event-ID)"
    assert gateway.context.metrics.sse_dropped._value.get() == 1
    assert hub.subscribers == 1


async def test_the_reader_reconnects_after_losing_redis(
    make_gateway: MakeGateway, store: JobStore, redis_client: aioredis.Redis
) -> None:
    gateway = await make_gateway(ECO2_SSE_BLOCK_MS="60000")
    hub = gateway.context.hub
    await store.create("job", "u")
    subscription = await hub.subscribe("job", 1)
    blocked = await wait_for(lambda: blocked_reader(redis_client, gateway), what="the reader to block")
    await redis_client.client_kill_filter(_id=blocked)
    await store.transition("job", "u", Stage.VISION, JobStatus.RUNNING)
    event = await next_event(subscription)
    assert event is not None
    assert event.stage == "vision"
