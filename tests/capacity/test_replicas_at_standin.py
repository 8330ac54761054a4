"""Three replicas of a model stage against the stand-in playing a provider: the shared budget keeps them together
under the configured calls in flight, counted by the stand-in itself (its peak of calls in flight)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from eco2.capacity import Budget, CapacitySettings
from eco2.model import ModelClient
from eco2_tools.standin import StandinConfig
from eco2_tools.standin.server import create_app
from tests.support import REDIS_TEST_URL, free_port

CAP = 2


@pytest.fixture
async def standin() -> AsyncIterator[str]:
    # Answers take 0.3 s, so calls overlap; the stand-in counts how many it holds at once.
    app = create_app(StandinConfig(vision_latency=0.0, answer_latency=0.3))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert asyncio.get_running_loop().time() < deadline, "the stand-in did not start"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await serving


async def test_three_replicas_together_never_exceed_the_cap_at_the_provider(
    standin: str, redis_client: aioredis.Redis
) -> None:
    replicas = []
    for _ in range(3):  # each with its own Redis connection and budget object, as three processes have
        client = aioredis.from_url(REDIS_TEST_URL, decode_responses=True)
        budget = Budget(client, CapacitySettings(max_in_flight=CAP), prefix="eco2:test:capacity")
        replicas.append((ModelClient(base_url=f"{standin}/v1", api_key="k", timeout_seconds=10, budget=budget), client))
    messages = [{"role": "user", "content": "유리병은 어떻게 버려요?"}]
    try:
        calls = [
            model._complete(model="gpt-4.1-mini", stage="chat", messages=messages, response_format=None, job_id=f"j{n}")
            for n in range(4)
            for model, _ in replicas
        ]
        replies = await asyncio.wait_for(asyncio.gather(*calls), 60)
    finally:
        for model, client in replicas:
            await model.aclose()
            await client.aclose()
    assert len(replies) == 12
    assert all(replies)
    async with httpx.AsyncClient() as http:
        counted = (await http.get(f"{standin}/v1/standin/stats")).json()
    assert counted["peak_in_flight"] == CAP  # reached, never passed
    assert counted["rate_limited"] == 0
