"""Part 1 of the gateway benchmark (tests.benchmarks.gateway): accept latency of POST /api/v1/scan, closed and
open loop, from client processes; the CPU of every process involved."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table

from eco2.gateway.auth import issue_token
from eco2_tools.bench.processes import Children, rabbitmq_pid
from eco2_tools.bench.report import (
    HistogramState,
    Row,
    fmt,
    histogram_row,
    percentile,
    sample_row,
)
from tests.benchmarks.gateway_rig import (
    ACCEPT_LEVELS,
    ACCEPT_WARMUP,
    BASELINE_CLIENTS,
    BASELINE_SECONDS,
    HANDLER_NOTE,
    IMAGE_ORIGIN,
    OPEN_LOOP_SHARE,
    OPEN_LOOP_USERS,
    REPLY_TIMEOUT,
    SEED_TARGET_ACCEPT_P99,
    SINK_NOTE,
    TARGET_ACCEPT_P99,
    Gateway,
    Sink,
    cores_used,
    cpu_now,
    emit,
    gateway_histograms,
    redis_pid,
    sleep_until,
    spawn_clients,
    split,
    start_gateway,
)

# --- 1. accept latency -------------------------------------------------------------------------------------


async def accept_client(config: dict[str, Any]) -> None:
    """A client process: one coroutine per user, each posting on a keep-alive connection.

    aiohttp on uvloop, not httpx: the clients share the machine's two cores with the gateway they measure, and
    httpx cost ~1.7 ms of CPU per request here (aiohttp about half), CPU taken from the gateway being measured.
    """
    users: list[str] = config["users"]
    secret: str = config["secret"]
    warmup, duration = float(config["warmup"]), float(config["duration"])
    tokens = {user: f"Bearer {issue_token(user, secret, 3600)}" for user in users}
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                base_url=config["url"],
                connector=aiohttp.TCPConnector(limit=len(users)),
                timeout=aiohttp.ClientTimeout(total=15.0),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"content-type": "application/json"},
            )
        )
        emit({"ready": True})
        start: dict[str, Any] = json.loads(await asyncio.to_thread(sys.stdin.readline))
        offset = time.perf_counter() - time.time()
        begin = float(start["start_at"]) + offset
        measure_from, end = begin + warmup, begin + warmup + duration
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        latencies: list[float] = []
        statuses: Counter[str] = Counter()
        accepted_total = 0
        cpu: list[float] = []

        async def cpu_marks() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            cpu.append(time.process_time())
            await asyncio.sleep(max(0.0, end - time.perf_counter()))
            cpu.append(time.process_time())

        async def post(user: str, tag: str, n: int) -> str:
            body = json.dumps({"image_url": f"{IMAGE_ORIGIN}/scans/{user}/{n}.jpg"})
            headers = {"authorization": tokens[user], "x-idempotency-key": f"{tag}-{n}"}
            try:
                async with session.post("/api/v1/scan", data=body, headers=headers) as response:
                    await response.read()
                    return str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return type(exc).__name__

        def record(outcome: str, started: float, finished: float) -> None:
            nonlocal accepted_total
            accepted_total += outcome == "202"
            if started >= measure_from:
                statuses[outcome] += 1
                if outcome == "202":
                    latencies.append(round(finished - started, 7))

        async def submitter(user: str) -> None:
            """Closed loop: the next submit as soon as the previous one is answered."""
            tag, n = uuid.uuid4().hex[:16], 0
            while True:
                started = time.perf_counter()
                if started >= end:
                    return
                n += 1
                outcome = await post(user, tag, n)
                record(outcome, started, time.perf_counter())

        async def arrivals(rate: float) -> None:
            """Open loop: Poisson arrivals at `rate`/s, each on an idle user's connection; latency counts from the
            scheduled arrival, so waiting for a free connection is included (no coordinated omission)."""
            idle: asyncio.Queue[str] = asyncio.Queue()
            for user in users:
                idle.put_nowait(user)
            tag, rng, pending = uuid.uuid4().hex[:16], random.Random(), set()

            async def one(scheduled: float, n: int) -> None:
                user = await idle.get()
                try:
                    outcome = await post(user, tag, n)
                finally:
                    idle.put_nowait(user)
                record(outcome, scheduled, time.perf_counter())

            at, n = begin, 0
            while True:
                at += rng.expovariate(rate)
                if at >= end:
                    break
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                n += 1
                task = asyncio.create_task(one(at, n))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*list(pending))

        if config.get("rate"):
            await asyncio.gather(cpu_marks(), arrivals(float(config["rate"])))
        else:
            await asyncio.gather(cpu_marks(), *(submitter(user) for user in users))
        emit(
            {
                "latencies": latencies,
                "statuses": dict(statuses),
                "accepted_total": accepted_total,
                "cpu_seconds": cpu[1] - cpu[0] if len(cpu) == 2 else None,
            }
        )


@dataclass
class AcceptRun:
    label: str
    clients: int
    processes: int
    seconds: float
    latencies: list[float]
    statuses: dict[str, int]
    accepted_total: int  # warm-up included
    cores: dict[str, float | None]
    client_cores: list[float | None]
    server: HistogramState
    sink: HistogramState
    offered: float | None = None  # open loop: arrivals per second; None for a closed loop

    @property
    def rate(self) -> float:
        return self.statuses.get("202", 0) / self.seconds

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "loop": "closed" if self.offered is None else f"open, Poisson {self.offered:.0f}/s",
            "clients": self.clients,
            "client_processes": self.processes,
            "measured_seconds": self.seconds,
            "statuses": self.statuses,
            "accepted_per_second": round(self.rate, 1),
            "cores_used": self.cores,
            "client_cores_used": self.client_cores,
        }


async def accept_run(
    children: Children,
    http: httpx.AsyncClient,
    gateway: Gateway,
    pids: dict[str, int | None],
    secret: str,
    *,
    clients: int,
    seconds: float,
    procs: int,
    label: str,
    rate: float | None = None,
    client_url: str | None = None,
) -> AcceptRun:
    """Closed loop with `clients` users, or with `rate`, an open loop of that many arrivals/s over `clients` users;
    the clients post to `client_url` (something in front of the gateway) or straight to the gateway."""
    groups = split(clients, min(procs, clients))
    processes = spawn_clients(children, "accept", len(groups), f"{clients}")
    try:
        first = 0
        for client, size in zip(processes, groups, strict=True):
            users = [f"bench-user-{i}" for i in range(first, first + size)]
            first += size
            config = {
                "url": client_url or gateway.url,
                "secret": secret,
                "users": users,
                "warmup": ACCEPT_WARMUP,
                "duration": seconds,
                "rate": None if rate is None else rate / len(groups),
            }
            await client.send(config)
        for client in processes:
            await client.receive()
        start_at = time.time() + 0.3
        for client in processes:
            await client.send({"start_at": start_at})
        await sleep_until(start_at + ACCEPT_WARMUP)
        cpu_before, (hist_before, sink_before) = cpu_now(pids), await gateway_histograms(http, gateway.metrics_url)
        await sleep_until(start_at + ACCEPT_WARMUP + seconds)
        cpu_after, (hist_after, sink_after) = cpu_now(pids), await gateway_histograms(http, gateway.metrics_url)
        replies = [await client.receive(timeout=REPLY_TIMEOUT) for client in processes]
    finally:
        for client in processes:
            children.stop(client.process)
    statuses: Counter[str] = Counter()
    for reply in replies:
        statuses.update(reply["statuses"])
    return AcceptRun(
        label=label,
        clients=clients,
        processes=len(processes),
        seconds=seconds,
        latencies=[x for reply in replies for x in reply["latencies"]],
        statuses=dict(statuses),
        accepted_total=sum(int(reply["accepted_total"]) for reply in replies),
        cores=cores_used(cpu_before, cpu_after, seconds),
        client_cores=[None if r["cpu_seconds"] is None else float(r["cpu_seconds"]) / seconds for r in replies],
        server=hist_after.minus(hist_before),
        sink=sink_after.minus(sink_before),
        offered=rate,
    )


def accept_rows(runs: Sequence[AcceptRun]) -> list[Row]:
    rows: list[Row] = []
    for run in runs:
        errors = {k: v for k, v in run.statuses.items() if k != "202"}
        little = run.clients / run.rate * 1000 if run.rate else float("nan")
        note = f"{run.rate:.0f} accepted/s; clients/throughput = {little:.1f} ms"
        if run.offered is not None:
            note = f"{run.rate:.0f} accepted/s of {run.offered:.0f}/s offered; latency from the scheduled arrival"
        target = None if run.clients == BASELINE_CLIENTS and run.offered is None else TARGET_ACCEPT_P99
        if target is not None and run.offered is None:
            values = sorted(run.latencies)
            seed = bool(values) and percentile(values, 0.99) <= SEED_TARGET_ACCEPT_P99
            note += f"; seed's p99 ≤ 100 ms: {'PASS' if seed else 'FAIL'}"
        if errors:
            note += f"; NOT 202: {errors}"
        extra = {"accepted_per_second": run.rate, "statuses": run.statuses}
        rows.append(sample_row(f"{run.label}: POST → 202", run.latencies, target=target, note=note, extra=extra))
        rows.append(histogram_row("  in the gateway (handler time)", run.server, HANDLER_NOTE))
        rows.append(histogram_row("  of which the K_SINK send", run.sink, SINK_NOTE))
    return rows


async def accept_benchmark(
    console: Console,
    children: Children,
    http: httpx.AsyncClient,
    sink: Sink,
    secret: str,
    args: argparse.Namespace,
    out: dict[str, Any],
) -> None:
    gateway = await start_gateway(children, sink.url, secret, "accept")
    out["gateway_log"] = gateway.log_name
    pids = {"gateway": gateway.process.pid, "sink": sink.process.pid, "redis": redis_pid(), "rabbitmq": rabbitmq_pid()}
    runs: list[AcceptRun] = []
    out["runs"] = runs
    levels = [(BASELINE_CLIENTS, BASELINE_SECONDS, "1 client (unloaded)")]
    levels += [(n, float(args.accept_seconds), f"{n} clients") for n in ACCEPT_LEVELS]
    measure = functools.partial(accept_run, children, http, gateway, pids, secret)
    try:
        for clients, seconds, label in levels:
            procs = min(args.client_procs, clients)
            console.print(f"  {label}: {procs} client process(es), {ACCEPT_WARMUP:.0f} s warm-up + {seconds:.0f} s …")
            runs.append(await measure(clients=clients, seconds=seconds, procs=procs, label=label))
        # Mobile users are not back-to-back robots: N users each submitting about once a second (Poisson).
        seconds = float(args.accept_seconds)
        for users in ACCEPT_LEVELS:
            label = f"{users} users at ~1 scan/s each (open loop, Poisson {users}/s)"
            console.print(f"  {label}: {ACCEPT_WARMUP:.0f} s warm-up + {seconds:.0f} s …")
            procs = min(args.client_procs, users)
            runs.append(await measure(clients=users, seconds=seconds, procs=procs, label=label, rate=float(users)))
        rate = round(OPEN_LOOP_SHARE * max(run.rate for run in runs if run.offered is None))
        if rate >= 1:
            label = f"open loop, Poisson {rate}/s (½ the best)"
            console.print(f"  {label}: {OPEN_LOOP_USERS} users, {ACCEPT_WARMUP:.0f} s warm-up + {seconds:.0f} s …")
            procs = args.client_procs
            runs.append(
                await measure(clients=OPEN_LOOP_USERS, seconds=seconds, procs=procs, label=label, rate=float(rate))
            )
    finally:
        children.stop(gateway.process)
    out["accepted_total"] = sum(run.accepted_total for run in runs)


def _cores(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def cpu_table(runs: Sequence[AcceptRun], nproc: int) -> Table:
    table = Table(
        title=f"CPU over the measured window: cores busy (of {nproc}) | ms CPU per accepted scan",
        title_justify="left",
        title_style="bold",
    )
    processes = ("gateway", "sink", "redis", "rabbitmq")
    table.add_column("run")
    for process in (*processes, "clients (sum)", "busiest client"):
        table.add_column(process, justify="right")
    table.add_column("accepted/s", justify="right")
    for run in runs:
        cells = []
        for process in processes:
            cores = run.cores.get(process)
            per = None if cores is None or not run.rate else cores / run.rate
            cells.append(f"{_cores(cores)} | {fmt(per)}")
        known = [c for c in run.client_cores if c is not None]
        total = sum(known) if known else None
        cells.append(f"{_cores(total)} | {fmt(None if total is None or not run.rate else total / run.rate)}")
        cells.append(_cores(max(known) if known else None))
        table.add_row(run.label, *cells, f"{run.rate:.0f}")
    return table
