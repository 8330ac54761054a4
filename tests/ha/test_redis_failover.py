"""Every Redis client of the pack follows the master through a failover, against a real primary, replica and three
Sentinels (eco2_tools.ha): a SIGKILLed primary, and a master demoted under a live connection (READONLY)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
import redis

from eco2.connections import async_redis, async_redis_pool, sync_redis
from eco2.jobs import JobStatus, JobStore, Stage
from eco2_tools.ha.cluster import HaSet
from eco2_tools.ha.redis_set import MASTER_NAME

pytestmark = pytest.mark.slow

# A failover here: 1 s until the Sentinels call the master down, then the election; well inside this.
FAILOVER_SECONDS = 20.0


async def _replicated(client: redis.asyncio.Redis) -> None:
    # The writes before the fault are on the replica, so the test asks only whether the client carries on.
    assert await client.wait(1, 5000) == 1


async def _demoted(ha_set: HaSet, port: int) -> bool:
    """The server on `port` is a replica now and every Sentinel names another master."""
    async with redis.asyncio.Redis(port=port, decode_responses=True) as old:
        role = (await old.role())[0]
    return role == "slave" and all(named not in (None, port) for named in ha_set.redis.masters_named())


async def test_the_job_store_carries_on_after_the_primary_is_killed(ha_set: HaSet) -> None:
    store = JobStore.from_url(ha_set.redis.url(1), ttl_seconds=600)
    try:
        await store.create("job-kill", "user-1")
        await _replicated(store.redis)
        before = ha_set.redis.kill_master()
        started = time.monotonic()
        moved = await store.transition("job-kill", "user-1", Stage.VISION, JobStatus.RUNNING)
        assert moved.outcome.value == "applied"
        assert time.monotonic() - started < FAILOVER_SECONDS
        assert ha_set.redis.master_port() != before
        assert (await store.get("job-kill") or {})["stage"] == Stage.VISION.value
    finally:
        await store.aclose()
        ha_set.redis.revive()


async def test_a_demoted_master_answering_readonly_sends_the_client_to_the_new_one(ha_set: HaSet) -> None:
    client = async_redis(ha_set.redis.url(2))
    sentinel = redis.Redis(port=ha_set.redis.sentinel_ports[0], decode_responses=True)
    try:
        await client.set("counter", 1)
        await _replicated(client)
        before = ha_set.redis.master_port()
        assert before is not None
        sentinel.sentinel_failover(MASTER_NAME)  # the old master stays up, as a replica: its writes answer READONLY
        deadline = time.monotonic() + FAILOVER_SECONDS
        while not await _demoted(ha_set, before):
            assert time.monotonic() < deadline, "the Sentinels did not fail over"
            await asyncio.sleep(0.1)
        # The client's connection is still open to the old master: this write meets READONLY there first.
        assert await client.incr("counter") == 2
        assert await cast(Any, client.connection_pool).get_master_address() != ("127.0.0.1", before)
    finally:
        sentinel.close()
        await client.aclose()


async def test_a_bounded_pool_and_a_blocking_client_both_follow_the_master(ha_set: HaSet) -> None:
    pool = async_redis_pool(ha_set.redis.url(3), max_connections=4)
    blocking = sync_redis(ha_set.redis.url(3))
    try:
        await pool.set("shared", "a")
        await _replicated(pool)
        ha_set.redis.kill_master()
        results = await asyncio.gather(*(pool.incr("hits") for _ in range(20)))
        assert sorted(results) == list(range(1, 21))  # every increment applied once, on the new master
        assert await asyncio.to_thread(blocking.get, "hits") == "20"
    finally:
        blocking.close()
        await pool.aclose()
        ha_set.redis.revive()
