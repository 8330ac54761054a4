"""Fixtures on the machine's real PostgreSQL (a database of the tests' own) and on SQLite files."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import Route

from eco2.adapter import EventFunction
from eco2.functions.persist import PersistContext, function
from tests.gateway.conftest import make_gateway, session_sink, sink  # noqa: F401  (the gateway's fixtures, reused)
from tests.persist import tables
from tests.support import REDIS_TEST_URL

PG_URL = os.environ.get("ECO2_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eco2_persist_test")


async def reset_postgres() -> None:
    """The tests' own database, created when missing, without persist's tables."""
    try:
        await tables.reset_postgres(PG_URL)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is not reachable for {PG_URL} ({exc}): tests use the real server")


@pytest.fixture(params=["postgres", "sqlite"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        await reset_postgres()
        return PG_URL
    return f"sqlite:///{tmp_path / 'eco2.sqlite3'}"


def app_of(fn: EventFunction[PersistContext]) -> Starlette:
    return Starlette(routes=[Route("/{path:path}", fn.handle_http, methods=["GET", "POST"])])


@pytest.fixture
def persist_env(database_url: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "ECO2_PERSIST_BATCH_ROWS": "50", "ECO2_PERSIST_BATCH_MS": "10"}


@pytest.fixture
async def persist_fn(
    persist_env: dict[str, str], redis_client: aioredis.Redis
) -> AsyncIterator[EventFunction[PersistContext]]:
    """persist on the tests' Redis (emptied first): what it checks an event against (eco2.persist.evidence)."""
    fn = function(persist_env)
    await fn.start({"REDIS_URL": REDIS_TEST_URL})
    yield fn
    await fn.stop()


@pytest.fixture
async def persist_http(persist_fn: EventFunction[PersistContext]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_of(persist_fn))
    async with httpx.AsyncClient(transport=transport, base_url="http://persist") as client:
        yield client
