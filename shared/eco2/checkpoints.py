"""Per-stage checkpoints: a stage's output computed at most once per job, across redeliveries and concurrent ones.

Two round trips around the computation, whatever the stage: one script checks that the job has not ended, reads the
stored output, else takes the lease; another stores the output (first writer wins) and releases the lease in the
same step — and, when the caller names one (`then`), records the stage's transition in that same step too
(eco2.stage_work.run_once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel

from eco2 import keys
from eco2.errors import StoreUnavailable, TransientError, store_call
from eco2.job_scripts import CHECKPOINT, RELEASE, begin_script, checkpoint_transition_script

log = logging.getLogger("eco2.jobs")
# Outputs kept in memory per process while Redis cannot take them (bounded: oldest dropped first).
MAX_UNSAVED = 1000

M = TypeVar("M", bound=BaseModel)
# The keys and arguments of the transition script (eco2.jobs) to run with the store of this output.
Then = Callable[[BaseModel], tuple[list[str], list[str]]]


@dataclass(frozen=True, slots=True)
class Stored(Generic[M]):
    """The stage's output; with `then`, the transition script's reply when it ran in the same step as this call's
    store (None: the output was stored already, or another delivery's was stored first)."""

    value: M
    then: list[Any] | None = None


class Checkpoints:
    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int, grace_seconds: float, terminal: frozenset[str]):
        self._redis = client
        self._ttl = ttl_seconds
        self._grace = grace_seconds
        self._begin = client.register_script(begin_script(terminal))
        self._checkpoint = client.register_script(CHECKPOINT)
        self._checkpoint_transition = client.register_script(checkpoint_transition_script(terminal))
        self._release = client.register_script(RELEASE)
        # Stage outputs computed but not yet stored (Redis stalled): a retry in this process reuses them.
        self._unsaved: OrderedDict[tuple[str, str], BaseModel] = OrderedDict()

    async def get(self, job_id: str, stage: str, model: type[M]) -> M | None:
        raw = await store_call(self._redis.hget(keys.job_checkpoints(job_id), stage))
        return model.model_validate_json(raw) if raw else None

    async def put(self, job_id: str, stage: str, value: M, *, lease: tuple[str, str] | None = None) -> M:
        """Store an output unless one is stored; return whichever is stored (the first). Releases `lease`
        (key, token) in the same step when it is still this caller's."""
        script_keys = [keys.job_checkpoints(job_id)] + ([lease[0]] if lease else [])
        args = [stage, value.model_dump_json(), str(self._ttl), lease[1] if lease else ""]
        stored = await store_call(self._checkpoint(keys=script_keys, args=args))
        return type(value).model_validate_json(stored)

    async def _put_then(
        self, job_id: str, stage: str, value: M, lease: tuple[str, str] | None, then: tuple[list[str], list[str]]
    ) -> Stored[M]:
        """`put`, and the transition `then` in the same step when the output stored is this one."""
        written = value.model_dump_json()
        script_keys = [keys.job_checkpoints(job_id), lease[0] if lease else keys.stage_lease(job_id, stage), *then[0]]
        args = [stage, written, str(self._ttl), lease[1] if lease else "", *then[1]]
        reply = await store_call(self._checkpoint_transition(keys=script_keys, args=args))
        if reply[0] == "other":
            return Stored(type(value).model_validate_json(reply[1]))
        return Stored(value, reply)

    async def once(
        self,
        job_id: str,
        stage: str,
        model: type[M],
        compute: Callable[[], Awaitable[M]],
        *,
        timeout_seconds: float,
        poll_seconds: float = 0.05,
        unless_ended: bool = False,
        then: Then | None = None,
    ) -> Stored[M] | None:
        """Run `compute` at most once per (job, stage); None only with `unless_ended`, for a job that ended.

        A stored output is reused. Concurrent deliveries share a lease: one computes, the others wait for its
        output up to `timeout_seconds` (then `stage_busy`, retried); if the holder dies, its lease expires and
        a waiter takes over. An output computed while Redis was unreachable is kept in memory: its write is
        retried for the store grace, and a later delivery to this process reuses it. With `then`, the write of a
        computed output also records the transition `then(output)` names (Stored.then).
        """
        lease_key = keys.stage_lease(job_id, stage)
        token = f"{time.time_ns()}-{id(compute)}"
        lease_ttl_ms = str(int((timeout_seconds + self._grace) * 1000) + 5000)
        script_keys = [keys.job(job_id), keys.job_checkpoints(job_id), lease_key]
        args = [stage, token, lease_ttl_ms, "1" if unless_ended else "0"]
        deadline = time.monotonic() + timeout_seconds
        while True:
            state, cached = await store_call(self._begin(keys=script_keys, args=args))
            if state == "ended":
                return None
            if state == "cached":
                return Stored(model.model_validate_json(cached))
            lease = (lease_key, token) if state == "leased" else None
            unsaved = self._unsaved.get((job_id, stage))
            if isinstance(unsaved, model):
                return await self._keep(job_id, stage, unsaved, lease, then)
            if lease is not None:
                return await self._keep(job_id, stage, await self._computed(compute, lease), lease, then)
            if time.monotonic() > deadline:
                raise TransientError("stage_busy", "another delivery of this stage is still running")
            await asyncio.sleep(poll_seconds)

    async def _computed(self, compute: Callable[[], Awaitable[M]], lease: tuple[str, str]) -> M:
        try:
            return await compute()
        except BaseException:
            # A lost release only delays a waiter until the lease expires.
            with contextlib.suppress(StoreUnavailable):
                await store_call(self._release(keys=[lease[0]], args=[lease[1]]))
            raise

    async def _keep(
        self, job_id: str, stage: str, value: M, lease: tuple[str, str] | None, then: Then | None
    ) -> Stored[M]:
        """Store a computed output, retrying a stalled Redis for the store grace; never drop what was paid for."""
        self._unsaved[(job_id, stage)] = value
        self._unsaved.move_to_end((job_id, stage))
        while len(self._unsaved) > MAX_UNSAVED:
            self._unsaved.popitem(last=False)
        transition = None if then is None else then(value)
        deadline = time.monotonic() + self._grace
        pause = 0.1
        while True:
            try:
                if transition is None:
                    stored = Stored(await self.put(job_id, stage, value, lease=lease))
                else:
                    stored = await self._put_then(job_id, stage, value, lease, transition)
            except StoreUnavailable:
                if time.monotonic() + pause > deadline:
                    log.warning(
                        "checkpoint not stored yet; kept in memory for the retry", extra={"fields": {"stage": stage}}
                    )
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            self._unsaved.pop((job_id, stage), None)
            return stored
