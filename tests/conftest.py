"""Fixtures on the machine's real Redis, and child processes for the stand-in model and the stage functions."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from eco2.jobs import JobStore
from eco2.tracing import allow_sdk
from tests.support import REDIS_TEST_URL, Child, free_port, start_child

# Tests record spans with the OpenTelemetry SDK in process (tests/test_observability.py).
allow_sdk()

STAGE_FUNCTIONS = ("vision", "rules", "answer", "reward")


def _require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2).ping()
    except redis.exceptions.ConnectionError:
        pytest.fail(f"Redis is not reachable at {REDIS_TEST_URL}: start it (see README) — tests use the real server")


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    _require_redis()
    client = aioredis.from_url(REDIS_TEST_URL, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> JobStore:
    return JobStore(redis_client, ttl_seconds=3600)


@pytest.fixture(scope="session")
def child_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("children")


@pytest.fixture(scope="session")
def standin(child_log_dir: Path) -> Iterator[Child]:
    """The stand-in model server, with latencies scaled down to ~1% of the seed's 3.5 s / 7 s."""
    port = free_port()
    child = start_child(
        ["model-standin", "--port", str(port)],
        port=port,
        env={"STANDIN_LATENCY_SCALE": "0.01"},
        log_dir=child_log_dir,
    )
    yield child
    child.stop()


@pytest.fixture
def standin_url(standin: Child) -> str:
    httpx.post(f"{standin.url}/v1/standin/reset", timeout=5).raise_for_status()
    return standin.url


@pytest.fixture(scope="session")
def stage_env(standin: Child) -> dict[str, str]:
    return {
        "REDIS_URL": REDIS_TEST_URL,
        "OPENAI_BASE_URL": f"{standin.url}/v1",
        "ECO2_STAGE_TIMEOUT_SECONDS": "20",
        # The stand-in serves the sample images on loopback: allowed by name, as `eco2 up` allows it.
        "ECO2_IMAGE_URL_ALLOWLIST": standin.url,
    }


@pytest.fixture(scope="session")
def stage_servers(stage_env: dict[str, str], child_log_dir: Path) -> Iterator[dict[str, Child]]:
    """Each stage function started alone, as `eco2 serve <name>` on its own port."""
    _require_redis()
    children: dict[str, Child] = {}
    try:
        for name in STAGE_FUNCTIONS:
            port = free_port()
            children[name] = start_child(
                ["serve", name, "--port", str(port)], port=port, env=stage_env, log_dir=child_log_dir
            )
        yield children
    finally:
        for child in children.values():
            child.stop()
