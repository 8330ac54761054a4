"""Done means, measured on real processes, RabbitMQ and Redis: every replica refuses a revoked token.

Four processes each (`eco2 serve authz`, and one `eco2 serve gateway` where logout is tested), on this run's
own fanout exchanges; "refused" is a 401 from every one of them, waited for with a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from eco2.cachesync.events import SyncEventType
from eco2.cachesync.store import store_revocation
from tests.cachesync.support import (
    CLOSED_AMQP_URL,
    Exchanges,
    all_refuse,
    function_env,
    new_token,
    publish,
    start_fleet,
    statuses,
    stop_all,
)
from tests.gateway.conftest import gateway_env
from tests.redis_proxy import StallableRedis
from tests.support import REDIS_TEST_URL, wait_for

PROPAGATION_DEADLINE = 2.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def test_a_revocation_published_on_the_exchange_is_refused_by_every_process(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    exchanges = Exchanges.fresh()
    fleet = await start_fleet("authz", 4, function_env(exchanges), child_log_dir)
    try:
        urls = [child.url for child in fleet]
        revoked, other = new_token(), new_token()
        assert await statuses(http, urls, revoked.headers) == [200] * 4
        await publish(exchanges.blacklist, SyncEventType.TOKEN_REVOKED, revoked.revoked())
        await wait_for(lambda: all_refuse(http, urls, revoked.headers), timeout=PROPAGATION_DEADLINE, what="4 refusals")
        assert await statuses(http, urls, other.headers) == [200] * 4, "only that token"
    finally:
        stop_all(fleet)


async def test_logout_at_a_gateway_is_refused_by_every_process(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    exchanges = Exchanges.fresh()
    authz = await start_fleet("authz", 3, function_env(exchanges), child_log_dir)
    env = gateway_env("http://127.0.0.1:9/", **exchanges.env(), AMQP_URL=function_env(exchanges)["AMQP_URL"])
    gateway = (await start_fleet("gateway", 1, env, child_log_dir))[0]
    try:
        user = new_token()
        job = f"{gateway.url}/api/v1/scan/no-such-job/result"
        assert (await http.get(job, headers=user.headers)).status_code == 404, "the token is good"
        assert (await http.post(f"{gateway.url}/api/v1/auth/logout", headers=user.headers)).status_code == 204

        async def refused_everywhere() -> bool:
            gateway_refuses = (await http.get(job, headers=user.headers)).status_code == 401
            return gateway_refuses and await all_refuse(http, [c.url for c in authz], user.headers)

        await wait_for(refused_everywhere, timeout=PROPAGATION_DEADLINE, what="gateway and 3 authz refusing")
    finally:
        stop_all([*authz, gateway])


async def test_tokens_revoked_before_a_process_started_are_refused_after_its_warm_up(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    earlier = [new_token() for _ in range(50)]
    for one in earlier:
        await store_revocation(redis_client, one.revoked())
    fleet = await start_fleet("authz", 4, function_env(Exchanges.fresh()), child_log_dir)
    try:
        urls = [child.url for child in fleet]
        for one in earlier[::10]:
            assert await statuses(http, urls, one.headers) == [401] * 4
        assert await statuses(http, urls, new_token().headers) == [200] * 4
    finally:
        stop_all(fleet)


async def test_with_the_broker_unreachable_revocations_written_to_redis_are_enforced(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    env = function_env(Exchanges.fresh(), AMQP_URL=CLOSED_AMQP_URL)
    fleet = await start_fleet("authz", 4, env, child_log_dir)  # ready: warmed from Redis alone
    try:
        urls = [child.url for child in fleet]
        revoked = new_token()
        assert await statuses(http, urls, revoked.headers) == [200] * 4
        await store_revocation(redis_client, revoked.revoked())  # written after the processes started
        assert await statuses(http, urls, revoked.headers) == [401] * 4
        assert await statuses(http, urls, new_token().headers) == [200] * 4
    finally:
        stop_all(fleet)


async def test_with_redis_stalled_valid_tokens_pass_and_revoked_ones_fail(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    proxy = await StallableRedis(REDIS_TEST_URL).start()
    exchanges = Exchanges.fresh()
    fleet = await start_fleet("authz", 4, function_env(exchanges, REDIS_URL=proxy.url), child_log_dir)
    try:
        urls = [child.url for child in fleet]
        before, during, valid = new_token(), new_token(), new_token()
        await publish(exchanges.blacklist, SyncEventType.TOKEN_REVOKED, before.revoked())
        await wait_for(lambda: all_refuse(http, urls, before.headers), timeout=PROPAGATION_DEADLINE, what="refused")
        proxy.stall()
        await publish(exchanges.blacklist, SyncEventType.TOKEN_REVOKED, during.revoked())
        await wait_for(lambda: all_refuse(http, urls, during.headers), timeout=PROPAGATION_DEADLINE, what="refused")
        assert await statuses(http, urls, before.headers) == [401] * 4
        assert await statuses(http, urls, valid.headers) == [200] * 4, "no 503 storm while Redis is stalled"
    finally:
        stop_all(fleet)
        await proxy.aclose()
