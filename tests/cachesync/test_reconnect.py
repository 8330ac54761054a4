"""The consumer thread survives its broker connection being closed: it reconnects (with backoff) and warms up
from Redis again, so what it could not hear meanwhile is refused all the same."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid

import pytest
import redis.asyncio as aioredis

from eco2.cachesync.blacklist import Blacklist
from eco2.cachesync.events import SyncEventType
from eco2.cachesync.process import BLACKLIST, start_sync
from eco2.cachesync.store import store_revocation
from tests.cachesync.support import Exchanges, function_env, new_token, publish
from tests.support import REDIS_TEST_URL, wait_for


def close_connection(connection_name: str) -> None:
    """What a broker restart does to one client: RabbitMQ closes this process's named connection."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    pids = [line.split("\t")[0] for line in listed.splitlines() if f'"{connection_name}"' in line]
    assert len(pids) == 1, f"expected one connection named {connection_name}, found {pids}"
    subprocess.run(
        ["rabbitmqctl", "-q", "close_connection", pids[0], "test: broker went away"],
        capture_output=True,
        timeout=30,
        check=True,
    )


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to close the connection")
async def test_a_closed_connection_is_reopened_and_the_cache_warmed_again(redis_client: aioredis.Redis) -> None:
    exchanges = Exchanges.fresh()
    name = f"test-{uuid.uuid4().hex[:8]}"
    sync = start_sync(function_env(exchanges), REDIS_TEST_URL, BLACKLIST, name=name)
    blacklist = Blacklist(sync, redis_client, source="/tests")
    try:
        await wait_for(lambda: _at(sync.sessions, 1), timeout=10, what="first session")
        missed = new_token()
        await store_revocation(redis_client, missed.revoked())  # written to Redis only: nobody published it
        assert not await blacklist.is_revoked(missed.jti), "live and not told: the copy does not have it yet"
        started = time.monotonic()
        await asyncio.to_thread(close_connection, f"eco2-cachesync {name}")
        await wait_for(lambda: _at(sync.sessions, 2), timeout=10, what="a second session")
        assert time.monotonic() - started < 10
        assert await blacklist.is_revoked(missed.jti), "the reconnect warmed the copy up again"
        heard = new_token()
        await publish(exchanges.blacklist, SyncEventType.TOKEN_REVOKED, heard.revoked())
        await wait_for(lambda: blacklist.is_revoked(heard.jti), timeout=2, what="consuming again")
    finally:
        await sync.stop()


async def _at(value: int, wanted: int) -> bool:
    return value >= wanted
