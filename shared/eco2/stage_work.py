"""A stage's work on a job, written one way by the four scan stages and chat: the write protocol.

1. `run_once` computes the stage's output at most once per job (eco2.checkpoints: a stored output is reused,
   concurrent deliveries wait for the one computing, an ended job's event is dropped before any model call) and
   records it together with the stage's own transition (`Change`) in one script, one round trip.
2. `DeltaWriter` streams the pieces of a stage's text to the job's event stream while it is computed; the pieces
   no write took yet when the stream ends go with the transition, in the same script.
3. `record_done` records the job's `done` with its result (the reward stage, after its own transition).
Everything here is idempotent: a redelivered event finds the output stored and its transition recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from eco2.jobs import (
    Claim,
    JobStatus,
    JobStore,
    Stage,
    Transition,
    TransitionOptions,
    delta_args,
    transition_reply,
)

M = TypeVar("M", bound=BaseModel)
# While a stage runs under run_once: the pieces of its streamed text that its DeltaWriter had not written when the
# stream ended. The stage's transition writes them just before itself, in the same script: one round trip fewer.
_HANDED_OVER: ContextVar[list[tuple[int, str]] | None] = ContextVar("eco2_handed_over", default=None)


@dataclass(frozen=True, slots=True)
class Change:
    """A stage's own transition, recorded with its output (`run_once`)."""

    user_id: str
    stage: Stage
    message: str
    data: dict[str, Any] | None
    status: JobStatus = JobStatus.RUNNING
    # Set on the job hash with the transition (chat's `result`); the stage's progress unless given.
    fields: dict[str, str] | None = None
    progress: int | None = None

    def options(self) -> TransitionOptions:
        return {"message": self.message, "data": self.data, "fields": self.fields, "progress": self.progress}


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
        keys, argv = store.transition_args(job_id, done.user_id, done.stage, done.status, **done.options())
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
    recorded = await store.transition(job_id, done.user_id, done.stage, done.status, **done.options())
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
    first in its script, one round trip fewer), else written.
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
