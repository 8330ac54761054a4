"""Submits under broker trouble, measured: `python -m tests.gateway.outbox_measure a1|a2|a4` (real Redis, DB from
ECO2_TEST_REDIS_URL, flushed; the gateway in process; a stand-in ingress). Prints one JSON line.

a1: ECO2_SINK_TIMEOUT_SECONDS=0.05 and an ingress that publishes but answers after 0.2 s, 100 concurrent submits.
a2: an ingress closing kept-alive connections idle for more than 0.1 s, 1,000 submits in 20 bursts of 50.
a4: the broker unreachable (a closed port) for 300 submits, then up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio as aioredis

from eco2.functions.gateway import Gateway
from eco2.serving import load_function
from tests.gateway.conftest import gateway_env
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer
from tests.support import REDIS_TEST_URL, free_port

SWEEP = {
    "ECO2_OUTBOX_SWEEP_SECONDS": "0.1",
    "ECO2_OUTBOX_BACKOFF_SECONDS": "0.2",
    "ECO2_OUTBOX_BACKOFF_CAP_SECONDS": "2",
}


async def start(sink_url: str, **env: str) -> tuple[Gateway, httpx.AsyncClient]:
    app, function = load_function("gateway")
    assert isinstance(function, Gateway)
    await function.start(gateway_env(sink_url, LOG_LEVEL="ERROR", **SWEEP, **env))
    limits = httpx.Limits(max_connections=500)
    transport = httpx.ASGITransport(app=app)
    return function, httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30, limits=limits)


async def submits(client: httpx.AsyncClient, first: int, count: int) -> list[int]:
    async def one(i: int) -> int:
        headers = {**bearer(f"user-{i}"), "X-Idempotency-Key": f"key-{i}"}
        return (await client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)).status_code

    return list(await asyncio.gather(*(one(first + i) for i in range(count))))


async def failed_jobs(redis: aioredis.Redis) -> int:
    failed = 0
    async for key in redis.scan_iter("eco2:job:*"):
        if str(key).count(":") == 2 and await redis.hget(key, "status") == "failed":
            failed += 1
    return failed


async def seconds_until(done: Callable[[], Awaitable[bool]], limit: float = 30.0) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await done():
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.05)
    return None


async def report(gateway: Gateway, statuses: list[int], sink: RecordingSink, **extra: Any) -> dict[str, Any]:
    outbox = gateway.context.outbox
    assert outbox is not None
    return {
        "202": statuses.count(202),
        "503": statuses.count(503),
        "failed_jobs": await failed_jobs(gateway.context.store.redis),
        "events_delivered": len(set(sink.ids())),
        "sends_received": len(sink.ids()),
        "outbox_left": await outbox.depth(),
        **extra,
    }


async def late_answers(sink: RecordingSink) -> dict[str, Any]:
    sink.mode, sink.late_seconds = "late", 0.2
    gateway, client = await start(sink.url, ECO2_SINK_TIMEOUT_SECONDS="0.05", ECO2_OUTBOX_TIMEOUT_SECONDS="1")
    statuses = await submits(client, 0, 100)
    sink.mode = "ok"
    outbox = gateway.context.outbox
    assert outbox is not None
    drained = await seconds_until(lambda: _empty(outbox.depth()))
    result = await report(gateway, statuses, sink, outbox_drained_after_s=drained)
    await client.aclose()
    await gateway.stop()
    return result


async def idle_closing(sink: RecordingSink) -> dict[str, Any]:
    gateway, client = await start(sink.url)
    statuses: list[int] = []
    for burst in range(20):
        statuses += await submits(client, burst * 50, 50)
        await asyncio.sleep(0.15)  # idle longer than the ingress keeps a connection
    result = await report(gateway, statuses, sink)
    await client.aclose()
    await gateway.stop()
    return result


async def broker_down() -> dict[str, Any]:
    port = free_port()
    gateway, client = await start(f"http://127.0.0.1:{port}/")
    statuses: list[int] = []
    for burst in range(10):
        statuses += await submits(client, burst * 30, 30)
    sink = RecordingSink()
    sink.start(port)
    outbox = gateway.context.outbox
    assert outbox is not None
    drained = await seconds_until(lambda: _empty(outbox.depth()))
    result = await report(gateway, statuses, sink, delivered_after_broker_up_s=drained)
    sink.stop()
    await client.aclose()
    await gateway.stop()
    return result


async def _empty(depth: Awaitable[int]) -> bool:
    return await depth == 0


async def main(scenario: str) -> None:
    redis = aioredis.from_url(REDIS_TEST_URL)
    await redis.flushdb()
    await redis.aclose()
    if scenario == "a4":
        result = await broker_down()
    else:
        sink = RecordingSink(idle_close=0.1 if scenario == "a2" else None)
        sink.start()
        result = await (idle_closing(sink) if scenario == "a2" else late_answers(sink))
        sink.stop()
    print(json.dumps({"scenario": scenario, **result}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "a1"))
