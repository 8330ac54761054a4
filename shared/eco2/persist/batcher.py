"""Group commit: concurrent deliveries share one transaction; each is answered only once its row is committed.

A batch is written when it holds `max_rows` records or its first record waited `max_wait` seconds, whichever
comes first; up to `concurrency` batches commit at once (the next one fills meanwhile). A `screen`, when given,
sees the whole batch first and may refuse single records (each poison, 422; the rest are written), or fail the
batch as transient by raising StoreUnavailable. A batch the database
refuses is retried one record at a time, so only the refused record is poison (422); a database that does not
answer fails the whole batch as transient (503: the broker redelivers, ON CONFLICT makes that harmless).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from eco2.errors import PoisonEvent, StoreUnavailable
from eco2.persist.metrics import PersistMetrics
from eco2.persist.records import Record
from eco2.persist.store import Refused

log = logging.getLogger("eco2.persist")

Write = Callable[[list[Record]], Awaitable[None]]
# Each record's refusal (None: write it), for a whole batch at once.
Screen = Callable[[list[Record]], Awaitable[Sequence[PoisonEvent | None]]]
Pending = tuple[Record, "asyncio.Future[None]"]


class GroupCommit:
    def __init__(
        self,
        write: Write,
        *,
        max_rows: int,
        max_wait: float,
        concurrency: int,
        metrics: PersistMetrics | None = None,
        screen: Screen | None = None,
    ) -> None:
        self._write = write
        self._screen = screen
        self._metrics = metrics or PersistMetrics()
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: list[Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, record: Record) -> None:
        """Return once `record` is committed; raise PoisonEvent if refused, StoreUnavailable if not written."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        joined = time.perf_counter()
        done.add_done_callback(lambda _: self._metrics.commit_wait.observe(time.perf_counter() - joined))
        self._pending.append((record, done))
        if len(self._pending) >= self._max_rows:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait, self._flush)
        await asyncio.shield(done)  # a cancelled delivery must not cancel its neighbours' commit

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._screen_then_commit(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _screen_then_commit(self, batch: list[Pending]) -> None:
        if self._screen is not None:
            try:
                refusals = await self._screen([record for record, _ in batch])
            except StoreUnavailable as exc:
                _settle(batch, exc)
                return
            for pending, refusal in zip(batch, refusals, strict=True):
                if refusal is not None:
                    _settle([pending], refusal)
            batch = [pending for pending, refusal in zip(batch, refusals, strict=True) if refusal is None]
            if not batch:
                return
        await self._commit(batch)

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            async with self._slots:
                await self._write([record for record, _ in batch])
        except Refused:
            if len(batch) > 1:  # find the refused record(s): the others are written on their own
                await asyncio.gather(*(self._commit([one]) for one in batch))
                return
            _settle(batch, PoisonEvent("refused_by_database", "the database refused this event's rows"))
            return
        except Exception:
            log.warning("batch not written", exc_info=True, extra={"fields": {"rows": len(batch)}})
            _settle(batch, StoreUnavailable("database_unavailable", "the database did not take the write"))
            return
        self._metrics.batch_rows.observe(len(batch))
        _settle(batch, None)

    async def aclose(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(batch: list[Pending], error: Exception | None) -> None:
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
