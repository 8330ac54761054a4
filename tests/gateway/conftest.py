"""Gateway fixtures: a recording K_SINK, the gateway in process (httpx.ASGITransport) or as `eco2 serve gateway`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import redis.asyncio as aioredis

from eco2.functions.gateway import Gateway as GatewayFunction
from eco2.gateway.context import GatewayContext
from eco2.jobs import JobStore
from eco2.serving import load_function
from tests.gateway.support import LIVE_INSTANCE, SECRET, RecordingSink
from tests.support import REDIS_TEST_URL, Child, free_port, start_child

BLACKLIST_EXCHANGE = f"test-{uuid4().hex[:8]}.eco2.auth.blacklist"


def gateway_env(sink_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "REDIS_URL": REDIS_TEST_URL,
        "ECO2_ENV": "production",
        "ECO2_JWT_SECRET": SECRET,
        "ECO2_JWT_PUBLIC_KEY": "",
        "ECO2_TRUST_USER_HEADER": "false",
        "K_SINK": sink_url,
        "ECO2_SINK_TIMEOUT_SECONDS": "0.5",
        "ECO2_IMAGE_URL_ALLOWLIST": "",
        # Tests submit public address literals that this offline machine cannot fetch; test_probe.py follows URLs.
        "ECO2_IMAGE_PROBE": "false",
        "ECO2_RATE_LIMIT_BURST": "100000",
        "ECO2_RATE_LIMIT_PER_SECOND": "100000",
        "ECO2_SSE_MAX_STREAMS_PER_USER": "100000",
        "ECO2_SSE_PING_SECONDS": "15",
        "LOG_LEVEL": "WARNING",
        # This run's own fanout exchanges: other runs on the shared RabbitMQ never hear its revocations.
        "ECO2_BLACKLIST_EXCHANGE": BLACKLIST_EXCHANGE,
        "ECO2_CATALOG_EXCHANGE": f"{BLACKLIST_EXCHANGE}.catalog",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def session_sink() -> Iterator[RecordingSink]:
    sink = RecordingSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def sink(session_sink: RecordingSink) -> Iterator[RecordingSink]:
    session_sink.reset()
    yield session_sink
    session_sink.reset()


@dataclass
class Gateway:
    client: httpx.AsyncClient
    function: GatewayFunction
    store: JobStore

    @property
    def context(self) -> GatewayContext:
        return self.function.context


MakeGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(redis_client: aioredis.Redis, sink: RecordingSink) -> AsyncIterator[MakeGateway]:
    """Build an in-process gateway (through functions-framework's app) with env overrides; stopped after the test."""
    started: list[tuple[httpx.AsyncClient, GatewayFunction]] = []

    async def make(**overrides: str) -> Gateway:
        app, function = load_function("gateway")
        assert isinstance(function, GatewayFunction)
        await function.start(gateway_env(sink.url, **overrides))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        started.append((client, function))
        return Gateway(client, function, JobStore(redis_client, ttl_seconds=3600))

    yield make
    for client, function in started:
        await client.aclose()
        await function.stop()


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


@pytest.fixture(scope="session")
def live_gateway(session_sink: RecordingSink, child_log_dir: Path) -> Iterator[Child]:
    """`eco2 serve gateway` as its own process: SSE streams for real, short heartbeats, a small Redis pool."""
    port = free_port()
    env = gateway_env(
        session_sink.url,
        ECO2_SSE_PING_SECONDS="0.5",
        ECO2_REDIS_MAX_CONNECTIONS="8",
        ECO2_IMAGE_URL_ALLOWLIST="http://127.0.0.1:9",
        ECO2_GATEWAY_INSTANCE=LIVE_INSTANCE,
        # Presigning photo uploads is local signing: a store that is never called is enough for /api/v1/images.
        S3_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_ACCESS_KEY_ID="fuzz",
        AWS_SECRET_ACCESS_KEY="fuzz-secret",
    )
    child = start_child(["serve", "gateway", "--port", str(port)], port=port, env=env, log_dir=child_log_dir)
    yield child
    child.stop()


@pytest.fixture
async def live(live_gateway: Child, redis_client: aioredis.Redis) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=20, limits=limits) as client:
        yield client
