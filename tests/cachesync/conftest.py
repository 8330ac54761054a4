"""Every exchange a cache-sync test made is deleted after it (the RabbitMQ is shared); an HTTP client to the
processes a test starts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.cachesync.support import delete_made_exchanges


@pytest.fixture(autouse=True)
async def _delete_exchanges() -> AsyncIterator[None]:
    yield
    await delete_made_exchanges()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client
