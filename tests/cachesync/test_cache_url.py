"""ECO2_REDIS_CACHE_URL: the caches' durable copy on its own Redis, job state on REDIS_URL (two DBs stand in).

The second DB is ECO2_TEST_REDIS_CACHE_URL (default: the test DB's neighbour). The test never flushes it: it
writes keys no one else uses (fresh token ids) and deletes them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis.asyncio as aioredis

from eco2 import keys
from eco2.cachesync.events import SyncEventType
from eco2.functions.authz import Authz
from eco2.serving import load_function
from eco2.settings import Settings
from tests.cachesync.support import Exchanges, function_env, new_token
from tests.cachesync.test_functions import ce
from tests.support import REDIS_TEST_URL


def _neighbour_db(url: str) -> str:
    parts = urlsplit(url)
    db = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{db - 1 if db > 0 else 1}"))


CACHE_URL = os.environ.get("ECO2_TEST_REDIS_CACHE_URL") or _neighbour_db(REDIS_TEST_URL)


@pytest.fixture
async def cache_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(CACHE_URL, decode_responses=True)
    yield client
    await client.aclose()


def test_the_cache_url_defaults_to_redis_url() -> None:
    assert Settings.from_env({"REDIS_URL": REDIS_TEST_URL}, "x").redis_cache_url == REDIS_TEST_URL
    split = Settings.from_env({"REDIS_URL": REDIS_TEST_URL, "ECO2_REDIS_CACHE_URL": CACHE_URL}, "x")
    assert (split.redis_url, split.redis_cache_url) == (REDIS_TEST_URL, CACHE_URL)
    assert Settings("x", redis_url=REDIS_TEST_URL).redis_cache_url == REDIS_TEST_URL


async def test_revocations_go_to_the_cache_redis_and_replicas_warm_up_from_it(
    redis_client: aioredis.Redis, cache_redis: aioredis.Redis
) -> None:
    env = function_env(Exchanges.fresh(), ECO2_REDIS_CACHE_URL=CACHE_URL)
    token = new_token()
    app, function = load_function("blacklist-sync")
    await function.start(env)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sync") as http:
            revoked = await http.post("/", **ce(SyncEventType.TOKEN_REVOKED, token.revoked().model_dump()))
        assert revoked.status_code == 202
    finally:
        await function.stop()
    assert await cache_redis.delete(keys.revoked_token(token.jti)) == 1, "the cache Redis did not get it"
    assert not await redis_client.exists(keys.revoked_token(token.jti)), "job-state Redis got a cache key"

    # A replica starting later warms its blacklist up from the cache Redis.
    later = new_token()
    await cache_redis.set(keys.revoked_token(later.jti), "1", ex=60)
    authz = Authz()
    try:
        await authz.start(env)
        assert authz.state.sync.warmed.is_set()
        assert authz.state.sync.caches.revoked.contains(later.jti)
        assert await authz.state.auth.blacklist.is_revoked(later.jti)
    finally:
        await authz.stop()
        await cache_redis.delete(keys.revoked_token(later.jti))
