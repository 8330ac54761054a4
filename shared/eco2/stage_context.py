"""What a stage function holds per process (`StageContext`) and how a stage's progress is written to the job.

Shared by the four scan stages (eco2.stages) and chat (eco2.chat): the job store, the rule book, the character
catalog, the model client built once, and the writes they have in common — a stage's output with its transition,
streamed text appended to the job's event stream, and the `done` transition with the job's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel

from eco2.adapter import EventFunction
from eco2.cachesync.handler import CatalogCache
from eco2.capacity import WaitAnnouncer, model_budget
from eco2.events import source_of
from eco2.jobs import Claim, JobStatus, JobStore, Stage, Transition, delta_args, transition_reply
from eco2.model import CLASSIFY_SYSTEM_PROMPT, ModelClient
from eco2.observability import FunctionMetrics
from eco2.rules import MAJOR_CATEGORIES, SITUATION_TAGS, CharacterCatalog, RuleBook
from eco2.settings import Settings
from eco2.storage import Storage

if TYPE_CHECKING:
    from eco2.cachesync.replica import CacheSync

M = TypeVar("M", bound=BaseModel)
# While a stage runs under run_once: the pieces of its streamed text that its DeltaWriter had not written when the
# stream ended. The stage's transition writes them just before itself, in the same script: one round trip fewer.
_HANDED_OVER: ContextVar[list[tuple[int, str]] | None] = ContextVar("eco2_handed_over", default=None)


@dataclass(slots=True)
class StageContext:
    """Per-process resources of a stage function: built once at start, closed on shutdown."""

    settings: Settings
    store: JobStore
    rules: RuleBook
    catalog: CatalogCache  # the package's catalog, or the newer one a catalog sync delivered
    classify_prompt: str
    metrics: FunctionMetrics | None = None  # the serving function's: model calls are timed into it
    _model: ModelClient | None = None
    _catalog_sync: CacheSync | None = None
    _storage: Storage | None = None

    @classmethod
    async def create(cls, settings: Settings, metrics: FunctionMetrics | None = None) -> StageContext:
        rules = RuleBook.load()
        return cls(
            settings=settings,
            metrics=metrics,
            store=JobStore.from_url(
                settings.redis_url,
                ttl_seconds=settings.job_ttl_seconds,
                store_grace_seconds=settings.store_grace_seconds,
                connections=settings.connections,
            ),
            rules=rules,
            catalog=CatalogCache(),
            classify_prompt=CLASSIFY_SYSTEM_PROMPT.format(
                majors=", ".join(MAJOR_CATEGORIES),
                middles=", ".join(rules.middle_categories()),
                tags=", ".join(SITUATION_TAGS),
            ),
        )

    @property
    def characters(self) -> CharacterCatalog:  # the current catalog, in process: no Redis read per event
        return self.catalog.current

    def sync_catalog(self) -> None:
        """Keep `catalog` current from the catalog exchange (reward): warm-up from Redis, then every update."""
        # Imported here: only reward keeps a catalog current, so only it loads the AMQP client (aio-pika).
        from eco2.cachesync.process import CATALOG, start_sync

        self._catalog_sync = start_sync(
            os.environ, self.settings.redis_cache_url, CATALOG, name=f"{self.settings.function_name}-{os.getpid()}"
        )
        self.catalog = self._catalog_sync.caches.catalog

    @property
    def model(self) -> ModelClient:
        # Built once, at start by the steps that use it (vision, answer): the others never load the openai SDK.
        if self._model is None:
            self._model = ModelClient(
                base_url=self.settings.openai_base_url,
                api_key=self.settings.openai_api_key,
                timeout_seconds=self.settings.stage_timeout_seconds,
                observe=None if self.metrics is None else self.metrics.model_call,
                budget=model_budget(self.store.redis, self.settings.stage_timeout_seconds, self.metrics),
                on_wait=WaitAnnouncer(self.store.redis),
            )
        return self._model

    def readable_image(self, url: str) -> str:
        """The URL the model reads the image from: a presigned GET for an upload to the photo store."""
        if self.settings.storage is None:
            return url
        if self._storage is None:
            self._storage = Storage(self.settings.storage)
        return self._storage.readable_url(url)

    async def aclose(self) -> None:
        if self._catalog_sync is not None:
            await self._catalog_sync.stop()
        if self._model is not None:
            await self._model.aclose()
        await self.store.aclose()

    @property
    def source(self) -> str:
        return source_of(self.settings.function_name)

    async def ready(self) -> bool:
        return (self._catalog_sync is None or self._catalog_sync.warmed.is_set()) and await self.store.ping()


class ModelFunction(EventFunction[StageContext]):
    """A function that calls the model (vision, answer, chat), served on uvloop + httptools (eco2.serving): it
    holds the openai SDK's ~21 MB anyway, and the two add ~1 MB for a fifth less CPU per event (measured:
    docs/benchmarks.md, "A stage's own cost"). The other stages keep asyncio + h11 for their idle memory."""

    fast_http: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Change:
    """A stage's own transition, recorded with its output (`run_once`)."""

    user_id: str
    stage: Stage
    message: str
    data: dict[str, Any] | None
    status: JobStatus = JobStatus.RUNNING


async def run_once(
    store: JobStore,
    job_id: str,
    stage: Stage,
    model: type[M],
    compute: Callable[[], Awaitable[M]],
    change: Callable[[M], Change],
    *,
    timeout_seconds: float,
) -> tuple[M, Transition] | None:
    """The stage's output computed at most once (JobStore.once_unless_ended), and its transition, `change(output)`,
    recorded: in the same script as the output's write when this delivery computed it (one round trip for both,
    one fewer per event; the streamed pieces a DeltaWriter handed over go first), else on its own (a redelivery
    that finds the output stored, a concurrent delivery whose output was stored first). None for a job that ended
    before the stage."""

    handed_over: list[tuple[int, str]] = []

    def then(output: BaseModel) -> tuple[list[str], list[str]]:
        done = change(cast(M, output))
        keys, argv = store.transition_args(
            job_id, done.user_id, done.stage, done.status, message=done.message, data=done.data
        )
        return keys, [str(len(handed_over)), *delta_args(handed_over), *argv]

    token = _HANDED_OVER.set(handed_over)
    try:
        stored = await store.checkpoints.once(
            job_id, stage.value, model, compute, timeout_seconds=timeout_seconds, unless_ended=True, then=then
        )
    finally:
        _HANDED_OVER.reset(token)
    if stored is None:
        return None
    if stored.then is not None:
        return stored.value, transition_reply(stored.then)
    done = change(stored.value)
    recorded = await store.transition(
        job_id, done.user_id, done.stage, done.status, message=done.message, data=done.data
    )
    return stored.value, recorded


async def record_done(
    store: JobStore,
    job_id: str,
    user_id: str,
    stage: Stage,
    result: dict[str, Any],
    *,
    message: str,
    data: dict[str, Any],
    claim: Claim | None = None,
) -> Transition:
    """A job's `done` transition (progress 100), its result kept whole in the job hash (what GET …/result serves)."""
    fields = {"result": json.dumps(result, ensure_ascii=False)}
    return await store.transition(
        job_id, user_id, stage, JobStatus.DONE, message=message, data=data, fields=fields, progress=100, claim=claim
    )


class DeltaWriter:
    """Appends each piece of a stage's streamed text to the job's event stream, numbered from 0.

    The model's stream never waits on Redis: a piece is queued and a background task writes it; the pieces that
    arrive while a write is in flight go out together in the next one (a burst is one round trip: the stand-in at
    zero latency sends ten pieces at once), each still its own numbered entry, so a redelivered stage writes the
    same entries whatever the grouping. Leaving the `async with` waits for the write in flight (the pieces must
    come before the stage's own transition) and raises a failed write (transient: the broker retries the stage);
    the pieces no write took yet are handed over to the stage's transition when it runs under `run_once` (written
    first in its script: profiled, the separate write was ~15% of the answer stage's CPU per event), else written.
    """

    def __init__(self, store: JobStore, job_id: str, stage: Stage, closed_by: JobStatus) -> None:
        self._store, self._job_id, self._stage, self._closed_by = store, job_id, stage, closed_by
        self._pending: list[tuple[int, str]] = []
        self._count = 0
        self._writing: asyncio.Task[None] | None = None
        self._handing_over: list[tuple[int, str]] | None = None

    async def __call__(self, piece: str) -> None:
        self._pending.append((self._count, piece))
        self._count += 1
        if self._writing is None or self._writing.done():
            if self._writing is not None:
                self._writing.result()  # a failed write ends the stream here
            self._writing = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending and self._handing_over is None:
            batch, self._pending = self._pending, []
            await self._store.append_deltas(self._job_id, self._stage, batch, closed_by=self._closed_by)

    async def __aenter__(self) -> DeltaWriter:
        return self

    async def __aexit__(self, failed: type[BaseException] | None, *_: object) -> None:
        if self._writing is None:
            return
        if failed is None:
            # The stage's transition takes what no write took yet, if it can (run_once), when the write in flight is
            # done: a write not begun yet then takes nothing.
            self._handing_over = _HANDED_OVER.get()
            await self._writing
            if self._handing_over is not None:
                self._handing_over.extend(self._pending)
            elif self._pending:
                await self._drain()
            return
        # The stream failed: what was not written yet no longer matters (the retry streams it again).
        self._writing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._writing
