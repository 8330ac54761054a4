"""What the gateway's 202 promises over Redis behind Sentinel, against the real set: with ECO2_SUBMIT_WAIT_REPLICAS=1
the 202 waits until the replica has the job and its outbox entry; a replica that cannot answer in time does not
fail the submit (it is counted)."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from eco2 import keys
from eco2.functions.gateway import Gateway
from eco2.serving import load_function
from eco2_tools.ha.cluster import HaSet
from eco2_tools.ha.supervision import kill
from tests.gateway.conftest import gateway_env
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer

pytestmark = pytest.mark.slow

Submit = Callable[[], Awaitable[tuple[httpx.Response, float]]]
STALL_SECONDS = 0.6


@pytest.fixture
async def gateway(ha_set: HaSet) -> AsyncIterator[tuple[Gateway, Submit]]:
    sink = RecordingSink()
    sink.start()
    app, function = load_function("gateway")
    assert isinstance(function, Gateway)
    env = gateway_env(sink.url, REDIS_URL=ha_set.redis.url(5), ECO2_SUBMIT_WAIT_REPLICAS="1")
    await function.start({**env, "ECO2_SUBMIT_WAIT_TIMEOUT_MS": "2000"})
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")

    async def submit() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        headers = {**bearer("user-1"), "X-Idempotency-Key": uuid.uuid4().hex}
        response = await client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)
        return response, time.monotonic() - started

    try:
        yield function, submit
    finally:
        await client.aclose()
        await function.stop()
        sink.stop()


async def _stalled_replica(ha_set: HaSet, seconds: float) -> None:
    """The replica stops taking the replication stream for `seconds` (SIGSTOP, then SIGCONT)."""
    name = ha_set.redis.replica_name()
    assert kill(ha_set.directory, name, signal.SIGSTOP)
    await asyncio.sleep(seconds)
    kill(ha_set.directory, name, signal.SIGCONT)


async def test_the_202_waits_until_the_replica_has_the_job(ha_set: HaSet, gateway: tuple[Gateway, Submit]) -> None:
    function, submit = gateway
    stall = asyncio.create_task(_stalled_replica(ha_set, STALL_SECONDS))
    await asyncio.sleep(0.05)
    response, took = await submit()
    await stall
    assert response.status_code == 202, response.text
    assert took >= STALL_SECONDS - 0.1  # held until the replica came back and acknowledged
    assert function.context.metrics.submit_unreplicated._value.get() == 0
    assert await function.context.store.get(response.json()["job_id"]) is not None


async def test_a_replica_that_misses_the_wait_does_not_fail_the_submit(
    ha_set: HaSet, gateway: tuple[Gateway, Submit]
) -> None:
    function, submit = gateway
    stall = asyncio.create_task(_stalled_replica(ha_set, 3.0))  # longer than the 2 s wait
    await asyncio.sleep(0.05)
    response, took = await submit()
    await stall
    assert response.status_code == 202, response.text
    assert 1.9 < took < 3.0
    assert function.context.metrics.submit_unreplicated._value.get() == 1
    assert keys.replication_mark(function.context.settings.instance).startswith("eco2:gateway:")
