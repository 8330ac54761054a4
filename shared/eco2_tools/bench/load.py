"""A burst of scans into one runtime: every job created and sent at once, then followed to `done` in Redis.

End to end is the job's own record: from `created_at` (written just before the send, as the gateway writes
it) to the `updated_at` of its `done` transition, both stamped by the processes that did the work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from eco2 import keys
from eco2.events import Priority, ScanRequested
from eco2.gateway.sink import binary, scan_requested
from eco2.jobs import JobStore
from eco2.sink import SendOutcome, Sink
from eco2.tracing import new_traceparent
from eco2_tools.bench.procs import pipeline_label, rss_mb
from eco2_tools.bench.runtimes import Runtime

SAMPLES = ("clear_pet_bottle", "glass_bottle", "aa_battery", "aluminum_can", "newspaper_bundle")
POLL_SECONDS = 0.25
SEND_CONCURRENCY = 100
TERMINAL = {"done", "failed", "cancelled"}


@dataclass
class BurstResult:
    scans: int
    done: int = 0
    failed: int = 0
    unfinished: int = 0
    send_errors: int = 0
    wall_seconds: float = 0.0
    e2e_seconds: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0  # the pipeline's processes (figures.PIPELINE)
    peak_rss_all_mb: float = 0.0  # every process of the runtime, the stand-in model included

    @property
    def throughput(self) -> float:
        return self.done / self.wall_seconds if self.wall_seconds > 0 else 0.0


async def burst(
    runtime: Runtime,
    store: JobStore,
    prefix: str,
    scans: int,
    *,
    timeout: float,
    on_finished: Callable[[int], None] = lambda _: None,
) -> BurstResult:
    result = BurstResult(scans)
    sink = runtime.sink()
    sampling = asyncio.create_task(_sample_memory(runtime, result))
    try:
        started = time.time()
        jobs = [f"{prefix}-{i}" for i in range(scans)]
        gate = asyncio.Semaphore(SEND_CONCURRENCY)
        sent = await asyncio.gather(*(_submit(store, sink, gate, runtime, job, i) for i, job in enumerate(jobs)))
        result.send_errors = sent.count(False)
        await _follow(store, [j for j, ok in zip(jobs, sent, strict=True) if ok], result, started, timeout, on_finished)
    finally:
        sampling.cancel()
        await sink.aclose()
    return result


async def _submit(store: JobStore, sink: Sink, gate: asyncio.Semaphore, runtime: Runtime, job: str, i: int) -> bool:
    data = ScanRequested(
        job_id=job,
        user_id=f"{job}-user",
        image_url=f"{runtime.standin_url}/samples/{SAMPLES[i % len(SAMPLES)]}.png",
        user_input="이거 어떻게 버려요?",
    )
    headers, body = binary(scan_requested(data, priority=Priority.NORMAL, traceparent=new_traceparent()))
    async with gate:
        await store.create(job, data.user_id, request=data.model_dump(mode="json"))
        outcome = await sink.send(headers, body)
    return outcome is SendOutcome.OK


async def _follow(
    store: JobStore,
    jobs: list[str],
    result: BurstResult,
    started: float,
    timeout: float,
    on_finished: Callable[[int], None],
) -> None:
    pending = set(jobs)
    last_done = started
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        pipe = store.redis.pipeline(transaction=False)
        order = sorted(pending)
        for job in order:
            pipe.hmget(keys.job(job), "status", "created_at", "updated_at")
        finished = 0
        for job, (status, created, updated) in zip(order, await pipe.execute(), strict=True):
            if status not in TERMINAL:
                continue
            pending.discard(job)
            finished += 1
            if status == "done":
                result.done += 1
                result.e2e_seconds.append(float(updated) - float(created))
                last_done = max(last_done, float(updated))
            else:
                result.failed += 1
        if finished:
            on_finished(finished)
    result.unfinished = len(pending)
    result.wall_seconds = last_done - started


async def _sample_memory(runtime: Runtime, result: BurstResult) -> None:
    while True:
        everything = runtime.processes()
        result.peak_rss_all_mb = max(result.peak_rss_all_mb, rss_mb(everything))
        pipeline = [p for p in everything if pipeline_label(p.label)]
        result.peak_rss_mb = max(result.peak_rss_mb, rss_mb(pipeline))
        await asyncio.sleep(0.5)
