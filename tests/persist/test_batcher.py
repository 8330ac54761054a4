"""Group commit alone: a batch goes at N rows or T ms, whichever first; every delivery waits for its own commit."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from eco2.errors import PoisonEvent, StoreUnavailable
from eco2.persist.batcher import GroupCommit
from eco2.persist.records import History, Record
from eco2.persist.store import Refused


def record(n: int) -> Record:
    return Record(None, History(f"job-{n}", "u", None, None, None, "no_rule", None, None, datetime.now(UTC)))


class Writer:
    def __init__(self, *, refuse: set[str] | None = None, down: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.refuse = refuse or set()
        self.down = down

    async def write(self, records: list[Record]) -> None:
        jobs = [r.history.job_id for r in records if r.history is not None]
        await asyncio.sleep(0.001)
        if self.down:
            raise ConnectionResetError("gone")
        if self.refuse & set(jobs):
            raise Refused("check")
        self.batches.append(jobs)


async def test_a_full_batch_goes_at_once_and_each_delivery_returns_after_its_commit() -> None:
    writer = Writer()
    batches = GroupCommit(writer.write, max_rows=25, max_wait=10.0, concurrency=2)
    started = time.monotonic()
    await asyncio.gather(*(batches.submit(record(n)) for n in range(100)))
    assert time.monotonic() - started < 1.0, "full batches must not wait for max_wait"
    assert sorted(len(b) for b in writer.batches) == [25, 25, 25, 25]


async def test_a_partial_batch_goes_after_max_wait() -> None:
    writer = Writer()
    batches = GroupCommit(writer.write, max_rows=500, max_wait=0.05, concurrency=1)
    started = time.monotonic()
    await asyncio.gather(*(batches.submit(record(n)) for n in range(3)))
    assert 0.04 <= time.monotonic() - started < 1.0
    assert writer.batches == [["job-0", "job-1", "job-2"]]


async def test_only_the_refused_record_is_poison() -> None:
    writer = Writer(refuse={"job-2"})
    batches = GroupCommit(writer.write, max_rows=5, max_wait=1.0, concurrency=1)
    results = await asyncio.gather(*(batches.submit(record(n)) for n in range(5)), return_exceptions=True)
    assert [type(r) for r in results] == [type(None)] * 2 + [PoisonEvent] + [type(None)] * 2
    assert sorted(job for b in writer.batches for job in b) == ["job-0", "job-1", "job-3", "job-4"]


async def test_a_database_that_fails_fails_the_whole_batch_as_transient() -> None:
    batches = GroupCommit(Writer(down=True).write, max_rows=3, max_wait=1.0, concurrency=1)
    results = await asyncio.gather(*(batches.submit(record(n)) for n in range(3)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) and r.status == 503 for r in results)
    with pytest.raises(StoreUnavailable):
        await GroupCommit(Writer(down=True).write, max_rows=1, max_wait=1.0, concurrency=1).submit(record(9))
