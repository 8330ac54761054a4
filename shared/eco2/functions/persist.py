"""The persist function: a job's final event (eco2.reward.granted, eco2.scan.completed) into the database.

Each delivery is answered once its rows are committed (202: durable; a duplicate or a replay commits nothing
new, ON CONFLICT DO NOTHING), 422 when the event or the database refuses it or Redis does not back it (its job,
its user, the reward's claim, the catalog: eco2.persist.evidence), 503 while the database or Redis is down.
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
from eco2.connections import async_redis_pool
from eco2.errors import StoreUnavailable
from eco2.persist.batcher import GroupCommit
from eco2.persist.connect import open_store
from eco2.persist.evidence import Evidence, KnownCharacters
from eco2.persist.metrics import PersistMetrics
from eco2.persist.records import Record, record_of
from eco2.persist.store import PersistSettings, Store
from eco2.settings import Settings

log = logging.getLogger("eco2.persist")


class PersistContext:
    """The store (opened at start, or on the first write after the database came back), the group commit, and
    what checks each batch's events against Redis before it is written (None: every event is written as it is)."""

    def __init__(
        self, settings: PersistSettings, metrics: PersistMetrics | None = None, evidence: Evidence | None = None
    ) -> None:
        self.settings = settings
        self.evidence = evidence
        self._store: Store | None = None
        self._opening = asyncio.Lock()
        self.batches = GroupCommit(
            self._write,
            max_rows=settings.batch_rows,
            max_wait=settings.batch_ms / 1000,
            concurrency=settings.pool_size,
            metrics=metrics,
            screen=evidence.screen if evidence is not None else None,
        )

    @classmethod
    async def create(
        cls, settings: PersistSettings, metrics: PersistMetrics | None = None, evidence: Evidence | None = None
    ) -> PersistContext:
        ctx = cls(settings, metrics, evidence)
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
            if not await (await self.store()).ping():
                return False
        except StoreUnavailable:
            return False
        return self.evidence is None or await self.evidence.ping()

    async def aclose(self) -> None:
        await self.batches.aclose()
        if self._store is not None:
            await self._store.aclose()
        if self.evidence is not None:
            await self.evidence.aclose()


async def persist(event: CloudEvent, ctx: PersistContext) -> None:
    await ctx.batches.submit(record_of(event))


def evidence_of(settings: Settings) -> Evidence:
    """The checks against Redis: jobs and claims on REDIS_URL, the catalog's copy on ECO2_REDIS_CACHE_URL."""
    jobs = async_redis_pool(settings.redis_url, env=settings.connections)
    same = settings.redis_cache_url == settings.redis_url
    cache = jobs if same else async_redis_pool(settings.redis_cache_url, env=settings.connections)
    return Evidence(jobs, KnownCharacters(cache))


class PersistFunction(EventFunction[PersistContext]):
    # uvloop + httptools: persist is request-heavy (thousands of small deliveries a second, each cheap).
    fast_http: ClassVar[bool] = True


def function(env: Mapping[str, str] | None = None) -> PersistFunction:
    """functions/persist/main.py serves this; `env` (default: the process environment) names the database."""

    async def setup(settings: Settings) -> PersistContext:
        persist_settings = PersistSettings.from_env(os.environ if env is None else env)
        return await PersistContext.create(persist_settings, metrics, evidence_of(settings))

    async def handle(event: CloudEvent, ctx: PersistContext) -> CloudEvent | None:
        await persist(event, ctx)
        return None

    served = PersistFunction("persist", setup, handle)
    metrics = PersistMetrics(served.metrics.registry)
    return served
