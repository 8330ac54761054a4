"""The persist function: a job's final event (eco2.reward.granted, eco2.scan.completed) into the database.

Each delivery is answered once its rows are committed (202: durable; a duplicate or a replay commits nothing
new, ON CONFLICT DO NOTHING), 422 when the event or the database refuses it, 503 while the database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import ClassVar

from cloudevents.http import CloudEvent

from eco2.adapter import EventFunction
from eco2.errors import StoreUnavailable
from eco2.persist.batcher import GroupCommit
from eco2.persist.connect import open_store
from eco2.persist.metrics import PersistMetrics
from eco2.persist.records import Record, record_of
from eco2.persist.store import PersistSettings, Store
from eco2.settings import Settings

log = logging.getLogger("eco2.persist")


class PersistContext:
    """The store (opened at start, or on the first write after the database came back) and the group commit."""

    def __init__(self, settings: PersistSettings, metrics: PersistMetrics | None = None) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._opening = asyncio.Lock()
        self.batches = GroupCommit(
            self._write,
            max_rows=settings.batch_rows,
            max_wait=settings.batch_ms / 1000,
            concurrency=settings.pool_size,
            metrics=metrics,
        )

    @classmethod
    async def create(cls, settings: PersistSettings, metrics: PersistMetrics | None = None) -> PersistContext:
        ctx = cls(settings, metrics)
        with contextlib.suppress(StoreUnavailable):
            await ctx.store()  # a database still down at start: not ready, and 503 until it answers
        return ctx

    async def store(self) -> Store:
        if self._store is not None:
            return self._store
        async with self._opening:
            if self._store is None:
                try:
                    self._store = await open_store(self.settings.database_url, self.settings.pool_size)
                except ValueError:
                    raise  # a DATABASE_URL that names no database: fail the start, loudly
                except Exception as exc:  # refused, starting up, timed out: the database is not there yet
                    log.warning("database not reachable", extra={"fields": {"error": type(exc).__name__}})
                    raise StoreUnavailable("database_unavailable", "the database is not reachable") from None
            return self._store

    async def _write(self, records: list[Record]) -> None:
        await (await self.store()).write(records)

    async def ready(self) -> bool:
        try:
            return await (await self.store()).ping()
        except StoreUnavailable:
            return False

    async def aclose(self) -> None:
        await self.batches.aclose()
        if self._store is not None:
            await self._store.aclose()


async def persist(event: CloudEvent, ctx: PersistContext) -> None:
    await ctx.batches.submit(record_of(event))


class PersistFunction(EventFunction[PersistContext]):
    # uvloop + httptools: persist is request-heavy (thousands of small deliveries a second, each cheap).
    fast_http: ClassVar[bool] = True


def function(env: Mapping[str, str] | None = None) -> PersistFunction:
    """functions/persist/main.py serves this; `env` (default: the process environment) names the database."""

    async def setup(settings: Settings) -> PersistContext:
        return await PersistContext.create(PersistSettings.from_env(os.environ if env is None else env), metrics)

    async def handle(event: CloudEvent, ctx: PersistContext) -> CloudEvent | None:
        await persist(event, ctx)
        return None

    served = PersistFunction("persist", setup, handle)
    metrics = PersistMetrics(served.metrics.registry)
    return served
