"""Benchmark of the model budget when capacity is free: CPU and Redis round trips per model call, on and off.

    .venv/bin/python -m tests.benchmarks.capacity [--calls 2000] [--out results/capacity.json]

One run, side by side: the same sequence of model calls against a local stub model (aiohttp, answering at once)
through ModelClient without a budget, then with one (eco2.capacity.Budget, free capacity: no call waits) holding
rates only (requests and tokens per minute), then rates and an in-flight cap. CPU is this process's
(time.process_time) per call; round trips are the Redis commands the client sent per call, counted at its
execute_command. Redis is the machine's (ECO2_TEST_REDIS_URL, default DB 15); the keys this run wrote are removed
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from eco2.capacity import Budget, CapacitySettings
from eco2.model import ModelClient

REDIS_URL = os.environ.get("ECO2_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PREFIX = "eco2:bench:capacity"
ROUNDS = 10
REPLY = json.dumps({"choices": [{"message": {"content": "ok"}}]})


async def _stub() -> tuple[web.AppRunner, str]:
    async def complete(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1"


class CountingRedis:
    """Counts the commands a Redis client sends (each one a round trip: nothing here is pipelined)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.count = 0
        original: Callable[..., Awaitable[Any]] = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.count += 1
            return await original(*args, **options)

        client.execute_command = counted  # type: ignore[method-assign]


async def _run(model: ModelClient, calls: int) -> tuple[float, float]:
    """CPU seconds and wall seconds for `calls` sequential calls."""
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(20):  # warm the connection pool and the script cache
        await model._complete(model="m", stage="chat", messages=messages, response_format=None, job_id="w")
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(calls):
        await model._complete(model="m", stage="chat", messages=messages, response_format=None, job_id=f"j{n}")
    return time.process_time() - cpu, time.perf_counter() - wall


async def _alone(name: str, step: Callable[[], Awaitable[Any]], calls: int) -> dict[str, Any]:
    """The CPU of `step` alone, without a model call around it: a bare PING on the same client (the floor of any
    shared budget) and the budget's take of a slot."""
    for _ in range(20):
        await step()
    cpu = time.process_time()
    for _ in range(calls):
        await step()
    spent = time.process_time() - cpu
    return {"budget": name, "calls": calls, "cpu_ms_per_call": 1000 * spent / calls, "wall_ms_per_call": 0.0}


async def measure(calls: int) -> list[dict[str, Any]]:
    runner, url = await _stub()
    client = aioredis.from_url(REDIS_URL)
    counter = CountingRedis(client)
    # A rate (requests and tokens per minute) takes one script per call; an in-flight cap also gives its slot back.
    rate = CapacitySettings(requests_per_minute=10**9, tokens_per_minute=10**12)
    capped = CapacitySettings(max_in_flight=1000, requests_per_minute=10**9, tokens_per_minute=10**12)
    clients = {
        "off": ModelClient(base_url=url, api_key="k", timeout_seconds=10),
        "rate": ModelClient(base_url=url, api_key="k", timeout_seconds=10, budget=Budget(client, rate, prefix=PREFIX)),
        "rate+cap": ModelClient(
            base_url=url, api_key="k", timeout_seconds=10, budget=Budget(client, capped, prefix=PREFIX)
        ),
    }
    rows = []
    try:
        for model in clients.values():
            await _run(model, 20)  # all warmed before any is measured
        # Rounds alternating between the three, each figure the median of its rounds: the machine's noise (other
        # processes) lands on all three alike instead of on whichever ran during a busy spell.
        per_round = max(1, calls // ROUNDS)
        spent: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        trips: dict[str, int] = dict.fromkeys(clients, 0)
        for _ in range(ROUNDS):
            for name, model in clients.items():
                before = counter.count
                spent[name].append(await _run(model, per_round))
                trips[name] += counter.count - before
        for name in clients:
            rows.append(
                {
                    "budget": name,
                    "calls": per_round * ROUNDS,
                    "cpu_ms_per_call": 1000 * statistics.median(cpu for cpu, _ in spent[name]) / per_round,
                    "wall_ms_per_call": 1000 * statistics.median(wall for _, wall in spent[name]) / per_round,
                    "redis_round_trips_per_call": trips[name] / ((per_round + 20) * ROUNDS),
                }
            )
        alone = Budget(client, rate, prefix=PREFIX)
        rows.append(await _alone("slot alone", lambda: alone.acquire("m", tokens=100), calls))
        rows.append(await _alone("PING alone", client.ping, calls))
    finally:
        for model in clients.values():
            await model.aclose()
        keys = [key async for key in client.scan_iter(f"{PREFIX}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await runner.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("results/capacity.json"))
    options = parser.parse_args()
    rows = asyncio.run(measure(options.calls))
    print(f"{'budget':<10}{'calls':>7}{'CPU ms/call':>13}{'wall ms/call':>14}{'Redis RT/call':>15}")
    for row in rows:
        print(
            f"{row['budget']:<10}{row['calls']:>7}{row['cpu_ms_per_call']:>13.3f}{row['wall_ms_per_call']:>14.3f}"
            f"{row.get('redis_round_trips_per_call', 1.0):>15.2f}"
        )
    off = rows[0]
    print(f"one bare Redis round trip (PING) on this machine: {rows[-1]['cpu_ms_per_call']:.3f} ms CPU")
    print(f"the budget's take of a slot alone (rates): {rows[-2]['cpu_ms_per_call']:.3f} ms CPU")
    for on in rows[1:-2]:
        print(f"budget ({on['budget']}) cost per call: {on['cpu_ms_per_call'] - off['cpu_ms_per_call']:.3f} ms CPU")
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
