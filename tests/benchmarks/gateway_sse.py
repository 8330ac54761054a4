"""Part 2 of the gateway benchmark (tests.benchmarks.gateway): SSE fan-out on one gateway process, streams opened
in steps from client processes, transitions written by JobStore.transition at a fixed rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as aioredis
from rich.console import Console

from eco2 import keys
from eco2.gateway.auth import issue_token
from eco2.jobs import JobStore, Stage
from eco2_tools.bench.harness import BenchError
from eco2_tools.bench.processes import Children
from eco2_tools.bench.report import (
    percentile,
    sample_row,
)
from eco2_tools.sse_client import aparse
from tests.benchmarks.gateway_rig import (
    IMAGE_ORIGIN,
    LIVE_EVENTS_PER_JOB,
    PIPELINE,
    REPLY_TIMEOUT,
    RESULT,
    SSE_COLLECT_TIMEOUT,
    SSE_SETTLE,
    SSE_STEPS,
    TARGET_SSE_P99,
    TERMINAL,
    Sink,
    cores_used,
    cpu_now,
    emit,
    gateway_gauges,
    gateway_redis_clients,
    redis_pid,
    rss_mb,
    spawn_clients,
    split,
    start_gateway,
)
from tests.gateway.support import advance, finish

# --- 2. SSE fan-out ----------------------------------------------------------------------------------------


async def sse_client(config: dict[str, Any]) -> None:
    """A client process following SSE streams; commands: {"open": n} (cumulative), then {"collect": seconds}.

    One httpx.AsyncClient per stream, as in accept_client: a shared pool of hundreds of connections costs O(N)
    per request and per response close, which would delay the events being measured.
    """
    jobs: list[list[str]] = config["jobs"]
    secret: str = config["secret"]
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(30.0, read=120.0)
    records: list[list[Any]] = []  # [job_id, seq, event, received (time.time())]
    failures: list[str] = []
    open_seconds: list[float] = []
    closed_after_terminal = 0
    opened = [asyncio.Event() for _ in jobs]
    tasks: list[asyncio.Task[None]] = []

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=config["url"],
                    limits=limits,
                    timeout=timeout,
                    verify=tls,
                    headers={"authorization": f"Bearer {issue_token(user, secret, 3600)}"},
                )
            )
            for _, user in jobs
        ]

        async def follow(index: int) -> None:
            nonlocal closed_after_terminal
            job_id = jobs[index][0]
            started = time.perf_counter()
            last_status = ""
            try:
                async with clients[index].stream("GET", f"/api/v1/scan/{job_id}/events") as response:
                    if response.status_code != 200:
                        failures.append(f"{job_id}: {response.status_code} {(await response.aread())[:200]!r}")
                        return
                    async for message in aparse(response.aiter_lines()):
                        received = time.time()
                        records.append([job_id, int(message.id or 0), message.event, received])
                        last_status = str(json.loads(message.data).get("status"))
                        if not opened[index].is_set():
                            open_seconds.append(time.perf_counter() - started)
                            opened[index].set()
                # The server ended the stream; count it when that came right after the terminal event.
                closed_after_terminal += last_status in TERMINAL
            except httpx.HTTPError as exc:
                failures.append(f"{job_id}: {type(exc).__name__}: {exc}")
            finally:
                opened[index].set()

        emit({"ready": True})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            command: dict[str, Any] = json.loads(line)
            if "open" in command:
                first, upto = len(tasks), int(command["open"])
                tasks += [asyncio.create_task(follow(i)) for i in range(first, upto)]
                try:
                    async with asyncio.timeout(30):
                        await asyncio.gather(*(opened[i].wait() for i in range(first, upto)))
                except TimeoutError:
                    pass
                emit({"opened": sum(e.is_set() for e in opened[:upto]), "failures": len(failures)})
            elif "collect" in command:
                pending: set[asyncio.Task[None]] = set()
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=float(command["collect"]))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                emit(
                    {
                        "records": records,
                        "failures": failures,
                        "open_seconds": open_seconds,
                        "closed_after_terminal": closed_after_terminal,
                        "still_open": len(pending),
                        "cpu_seconds": time.process_time(),
                    }
                )
                return


async def create_jobs(store: JobStore, jobs: Sequence[tuple[str, str]]) -> None:
    """As the gateway's submit records a job (JobStore.create; the hash's user_id is what a stream is checked
    against), without the submit itself."""
    for first in range(0, len(jobs), 100):
        await asyncio.gather(
            *(
                store.create(job_id, user, request={"image_url": f"{IMAGE_ORIGIN}/scans/{user}/1.jpg"})
                for job_id, user in jobs[first : first + 100]
            )
        )


async def write_transitions(store: JobStore, jobs: Sequence[tuple[str, str]], rate: float) -> dict[str, Any]:
    """vision, rule, answer, reward, done for every job, stage by stage, `rate` writes per second."""
    plan = [(job_id, user, stage) for stage in (*PIPELINE, Stage.DONE) for job_id, user in jobs]
    round_trips: list[float] = []

    async def write(job_id: str, user: str, stage: Stage) -> None:
        # As the stage functions write them (the same calls as the gateway tests' fixtures).
        started = time.perf_counter()
        if stage is Stage.DONE:
            await finish(store, job_id, RESULT, user)
        else:
            await advance(store, job_id, (stage,), user)
        round_trips.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    began, started_at = time.perf_counter(), time.time()
    for index, item in enumerate(plan):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(write(*item)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - began
    return {
        "writes": len(plan),
        "started_at": started_at,
        "seconds": wall,
        "rate": len(plan) / wall,
        "round_trips": round_trips,
    }


async def stream_stamps(redis: aioredis.Redis, job_ids: Sequence[str]) -> dict[tuple[str, int], float]:
    """(job, seq) → the entry's `at`: time.time() as JobStore.transition sent the write."""
    stamps: dict[tuple[str, int], float] = {}
    for first in range(0, len(job_ids), 200):
        chunk = job_ids[first : first + 200]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.xrange(keys.job_events(job_id))
            replies = await pipe.execute()
        for job_id, entries in zip(chunk, replies, strict=True):
            for _, fields in entries:
                stamps[(job_id, int(fields["seq"]))] = float(fields["at"])
    return stamps


TIMELINE_WINDOW = 0.5


def timeline(timed: Sequence[tuple[float, float, int]], processes: int) -> list[dict[str, Any]]:
    """Delivery latency by when the event was written (TIMELINE_WINDOW windows), overall and per client process:
    a stall seen by every client process at once is upstream of them (gateway, Redis, or the machine)."""
    if not timed:
        return []
    first = min(t for t, _, _ in timed)
    windows: dict[int, list[tuple[float, int]]] = {}
    for written, latency, process in timed:
        windows.setdefault(int((written - first) / TIMELINE_WINDOW), []).append((latency, process))
    rows = []
    for index in sorted(windows):
        values = sorted(latency for latency, _ in windows[index])
        per_process = []
        for process in range(processes):
            mine = sorted(latency for latency, p in windows[index] if p == process)
            per_process.append(percentile(mine, 0.99) if mine else None)
        rows.append(
            {
                "from_s": round(index * TIMELINE_WINDOW, 2),
                "events": len(values),
                "p50": percentile(values, 0.50),
                "p99": percentile(values, 0.99),
                "max": values[-1],
                "p99_by_client_process": per_process,
            }
        )
    return rows


@dataclass
class Step:
    streams: int
    open_seconds: float
    redis: dict[str, Any]
    gauges: dict[str, float]
    rss_mb: float | None


async def sse_benchmark(
    console: Console,
    children: Children,
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    sink: Sink,
    secret: str,
    args: argparse.Namespace,
    out: dict[str, Any],
) -> None:
    streams, procs = int(args.sse_streams), min(args.client_procs, int(args.sse_streams))
    gateway = await start_gateway(children, sink.url, secret, "sse")
    out["gateway_log"] = gateway.log_name
    steps: list[Step] = []
    out["steps"] = steps
    try:
        run = uuid.uuid4().hex[:8]
        jobs = [(f"ssebench-{run}-{i}", f"sse-user-{i}") for i in range(streams)]
        store = JobStore(redis, ttl_seconds=3600)
        await create_jobs(store, jobs)
        clients = spawn_clients(children, "sse", procs, "fanout")
        # Round robin, so that every stretch of the writes reaches every client process.
        for index, client in enumerate(clients):
            await client.send({"url": gateway.url, "secret": secret, "jobs": jobs[index::procs]})
        for client in clients:
            await client.receive()
        out["idle"] = {"redis": await gateway_redis_clients(redis, gateway.process.pid)}
        for target in sorted({n for n in SSE_STEPS if n < streams} | {streams}):
            console.print(f"  opening streams up to {target} …")
            began = time.perf_counter()
            for client, count in zip(clients, split(target, procs), strict=True):
                await client.send({"open": count})
            opened = 0
            for client in clients:
                reply = await client.receive()
                opened += int(reply["opened"])
                if reply["failures"]:
                    raise BenchError(f"{client.name}: {reply['failures']} streams failed to open")
            took = time.perf_counter() - began
            if opened != target:
                raise BenchError(f"only {opened} of {target} streams opened")
            await asyncio.sleep(SSE_SETTLE)
            steps.append(
                Step(
                    target,
                    took,
                    await gateway_redis_clients(redis, gateway.process.pid),
                    await gateway_gauges(http, gateway.metrics_url),
                    rss_mb(gateway.process.pid),
                )
            )
        console.print(f"  writing {streams * LIVE_EVENTS_PER_JOB} transitions at {args.sse_rate}/s …")
        pids = {"gateway": gateway.process.pid, "redis": redis_pid()}
        cpu_before, wall_before = cpu_now(pids), time.perf_counter()
        writes = await write_transitions(store, jobs, float(args.sse_rate))
        replies = []
        for client in clients:
            await client.send({"collect": SSE_COLLECT_TIMEOUT})
        for client in clients:
            replies.append(await client.receive(timeout=SSE_COLLECT_TIMEOUT + REPLY_TIMEOUT))
        out["cores_during_writes"] = cores_used(cpu_before, cpu_now(pids), time.perf_counter() - wall_before)
        out["after"] = {
            "redis": await gateway_redis_clients(redis, gateway.process.pid),
            "gauges": await gateway_gauges(http, gateway.metrics_url),
        }
        stamps = await stream_stamps(redis, [job_id for job_id, _ in jobs])
    finally:
        children.stop(gateway.process)
    records = [[*record, index] for index, reply in enumerate(replies) for record in reply["records"]]
    live = [r for r in records if int(r[1]) > 1]  # seq 1 (queued) is the replay, before any write
    latencies: list[float] = []
    by_stage: dict[str, list[float]] = {}
    timed: list[tuple[float, float, int]] = []  # (written at, latency, client process)
    unstamped = 0
    for job_id, seq, event, received, process in live:
        stamp = stamps.get((str(job_id), int(seq)))
        if stamp is None:
            unstamped += 1
            continue
        latencies.append(float(received) - stamp)
        by_stage.setdefault(str(event), []).append(float(received) - stamp)
        timed.append((stamp, float(received) - stamp, int(process)))
    out["timeline"] = timeline(timed, len(replies))
    expected = streams * LIVE_EVENTS_PER_JOB
    closed = sum(int(reply["closed_after_terminal"]) for reply in replies)
    still_open = sum(int(reply["still_open"]) for reply in replies)
    failures = [f for reply in replies for f in reply["failures"]]
    note = f"{writes['rate']:.0f} writes/s; {len(live)}/{expected} events received"
    if len(live) != expected:
        note += f" ({expected - len(live)} MISSING)"
    note += f"; closed by the gateway after done: {closed}/{streams}"
    rows = [
        sample_row(
            f"delivery: write → SSE event received, {streams} streams",
            latencies,
            target=TARGET_SSE_P99,
            note=note,
            extra={"expected": expected, "received": len(live), "closed_after_done": closed},
        )
    ]
    for stage in (*PIPELINE, Stage.DONE):
        rows.append(sample_row(f"  {stage.value} events", by_stage.get(stage.value, [])))
    rows.append(
        sample_row(
            "  the write itself (JobStore.transition round trip)", writes["round_trips"], note="from this process"
        )
    )
    open_all = [float(x) for reply in replies for x in reply["open_seconds"]]
    rows.append(
        sample_row(
            "GET …/events → replayed first event",
            open_all,
            note="every stream, as opened in the steps (all of a step's streams at once)",
        )
    )
    out["rows"] = rows
    out["writes"] = {k: v for k, v in writes.items() if k != "round_trips"}
    out["stream_failures"] = failures
    out["streams_still_open_at_collect"] = still_open
    out["closed_after_done"] = closed
    out["events_without_stream_entry"] = unstamped
    out["sse_client_cpu_seconds"] = [reply["cpu_seconds"] for reply in replies]
