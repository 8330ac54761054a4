"""Benchmark of the persist function on PostgreSQL: group commit vs one insert per event, in one run.

    .venv/bin/python -m tests.benchmarks.persist [--events N] [--concurrency C] [--out results/persist.json]

`eco2 serve persist` is started as knative/persist.yaml says (its container command and `env`), with DATABASE_URL
pointing at a PostgreSQL database of its own (ECO2_BENCH_DATABASE_URL, created when missing, its tables dropped
first). Each event is backed in Redis first as the reward stage backs it (its job done, its reward's claim: what
persist checks before it writes, eco2.persist.evidence), on ECO2_BENCH_REDIS_URL. A client holding C deliveries in
flight (the Trigger's parallelism: 100, as the broker's dispatcher would) posts N distinct eco2.reward.granted
events in binary mode over keep-alive connections; each answer is a 2xx only after its row committed. Measured per
mode: rewards/s (N / wall time) and the time each reward waits for its answer (send → 2xx: batch wait + commit +
HTTP), p50/p99. Then the table is checked: N rows, all there.
Modes: the manifest's group commit (ECO2_PERSIST_BATCH_ROWS/…_MS as written), and ECO2_PERSIST_BATCH_ROWS=1
(every delivery its own INSERT and commit, the same pool of connections).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from eco2.functions.persist import PersistContext
from eco2.jobs import JobStore
from eco2.persist.records import record_of
from eco2.persist.store import PersistSettings
from eco2_tools.bench.processes import ROOT, cpu_seconds, function_env
from eco2_tools.bench.report import HistogramState, Row, histogram_row, histogram_state, rows_table, sample_row
from eco2_tools.local.processes import container_command
from eco2_tools.local.replicas import free_port
from eco2_tools.manifests import Manifests
from tests.persist.events import CATALOG_IDS, back, granted
from tests.persist.tables import reset_postgres

DATABASE_URL = os.environ.get("ECO2_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eco2_persist_bench")
REDIS_URL = os.environ.get("ECO2_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKING_CONCURRENCY = 50
TARGET_RATE = 5000.0
TARGET_SPEEDUP = 10.0
WARMUP = 500


async def reset_database() -> None:
    await reset_postgres(DATABASE_URL)


async def ledger_count() -> int:
    conn = await asyncpg.connect(DATABASE_URL)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM reward_ledger"))
    finally:
        await conn.close()


def granted_events(n: int, tag: str) -> list[CloudEvent]:
    """N distinct reward.granted events: each a character of the catalog, each (user, character) once."""
    per_user = len(CATALOG_IDS)
    return [granted(f"bench-{tag}-{i // per_user}", CATALOG_IDS[i % per_user], f"{tag}-{i}") for i in range(n)]


async def backed(n: int, tag: str) -> list[tuple[dict[str, str], bytes]]:
    """N distinct reward.granted deliveries, backed in Redis and encoded once up front (the client's CPU goes to
    sending)."""
    made = granted_events(n, tag)
    store = JobStore.from_url(REDIS_URL, ttl_seconds=3600)
    gate = asyncio.Semaphore(BACKING_CONCURRENCY)

    async def one(event: CloudEvent) -> None:
        async with gate:
            await back(store, event)

    try:
        await asyncio.gather(*(one(event) for event in made))
    finally:
        await store.aclose()
    out = []
    for event in made:
        headers, body = to_binary(event)
        out.append((dict(headers), body))
    return out


async def drive(
    url: str, deliveries: list[tuple[dict[str, str], bytes]], concurrency: int
) -> tuple[float, list[float]]:
    """Post every delivery with `concurrency` in flight; (wall seconds, per-delivery seconds to its 2xx)."""
    latencies: list[float] = []
    queue = iter(deliveries)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for headers, body in queue:
                sent = time.perf_counter()
                async with session.post(url, headers=headers, data=body) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"persist answered {response.status}")
                latencies.append(time.perf_counter() - sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def start_persist(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    service = Manifests.load(ROOT).services["persist"]
    command = [*container_command(service.command), "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={
                **function_env(),
                **service.env,
                "DATABASE_URL": DATABASE_URL,
                "REDIS_URL": REDIS_URL,
                "LOG_LEVEL": "WARNING",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"eco2 serve persist exited with {process.returncode}")
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("eco2 serve persist did not become ready")


async def measure(mode: str, env: dict[str, str], n: int, concurrency: int, log_dir: Path) -> dict[str, Any]:
    await reset_database()
    port, metrics_port = free_port(), free_port()
    url, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    log = log_dir / f"persist-{mode.replace(' ', '-')}.log"
    process = start_persist({**env, "ECO2_METRICS_PORT": str(metrics_port)}, port, log)
    try:
        await wait_ready(url, process)
        await drive(f"{url}/", await backed(WARMUP, f"warm{port}"), concurrency)
        deliveries = await backed(n, f"run{port}")
        cpu = (cpu_seconds(process.pid), time.process_time())
        before = await scrape(metrics)
        wall, latencies = await drive(f"{url}/", deliveries, concurrency)
        server_cpu = (cpu_seconds(process.pid) or 0.0) - (cpu[0] or 0.0)
        client_cpu = time.process_time() - cpu[1]
        after = await scrape(metrics)
    finally:
        process.terminate()
        process.wait(timeout=15)
    rows = await ledger_count()
    if rows != WARMUP + n:
        raise RuntimeError(f"{mode}: {rows} rows in reward_ledger, expected {WARMUP + n}")
    return {
        "mode": mode,
        "events": n,
        "seconds": wall,
        "rewards_per_s": n / wall,
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "latencies": latencies,
        "commit_wait": histogram_row(
            f"{mode}: each event's wait for its batch's commit",
            after["eco2_persist_commit_wait_seconds"].minus(before["eco2_persist_commit_wait_seconds"]),
            "server side, from joining a batch to its commit",
        ),
        "batch_events": after["eco2_persist_batch_events"].minus(before["eco2_persist_batch_events"]),
    }


async def scrape(url: str) -> dict[str, HistogramState]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        families = list(text_string_to_metric_families(await response.text()))
    names = ("eco2_persist_commit_wait_seconds", "eco2_persist_batch_events")
    return {name: histogram_state(families, name, ("function", "persist")) for name in names}


async def measure_store(mode: str, batch_rows: int, n: int, concurrency: int) -> dict[str, Any]:
    """The same write path without HTTP: `concurrency` submitters into PersistContext's group commit in process."""
    await reset_database()
    service = Manifests.load(ROOT).services["persist"]
    settings = PersistSettings.from_env({**service.env, "DATABASE_URL": DATABASE_URL})
    ctx = await PersistContext.create(replace(settings, batch_rows=batch_rows))
    records = [record_of(from_http(*to_binary(event))) for event in granted_events(n, f"store{batch_rows}")]
    pending = iter(records)
    latencies: list[float] = []

    async def submitter() -> None:
        for record in pending:
            sent = time.perf_counter()
            await ctx.batches.submit(record)
            latencies.append(time.perf_counter() - sent)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await ctx.aclose()
    if await ledger_count() != n:
        raise RuntimeError(f"{mode}: rows missing in reward_ledger")
    return {"mode": mode, "events": n, "seconds": wall, "rewards_per_s": n / wall, "latencies": latencies}


def report(console: Console, runs: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    grouped, single = runs[:2]
    speedup = grouped["rewards_per_s"] / single["rewards_per_s"]
    rows: list[Row] = []
    for run in runs[:2]:
        rows.append(run["commit_wait"])
        batches = run["batch_events"]
        run["mean_batch_events"] = batches.total / batches.count if batches.count else None
    for run in runs:
        cpu = ""
        if "server_cpu_s" in run:
            cpu = f"; cpu server {run['server_cpu_s']:.1f} s, client {run['client_cpu_s']:.1f} s"
        rows.append(
            sample_row(
                f"{run['mode']}: wait for the commit",
                run["latencies"],
                note=f"{run['rewards_per_s']:,.0f} rewards/s ({run['events']} in {run['seconds']:.2f} s{cpu})",
            )
        )
    console.print(rows_table(f"persist on PostgreSQL, {concurrency} deliveries in flight: times in ms", rows))
    verdict = grouped["rewards_per_s"] >= TARGET_RATE and speedup >= TARGET_SPEEDUP
    console.print(f"events per batch (mean): group commit {grouped['mean_batch_events']:.1f}")
    console.print(
        f"group commit {grouped['rewards_per_s']:,.0f} rewards/s vs one insert per event "
        f"{single['rewards_per_s']:,.0f} rewards/s: {speedup:.1f}x "
        f"(targets ≥ {TARGET_RATE:,.0f}/s and ≥ {TARGET_SPEEDUP:.0f}x: {'PASS' if verdict else 'FAIL'})"
    )
    if len(runs) == 4:
        store_speedup = runs[2]["rewards_per_s"] / runs[3]["rewards_per_s"]
        console.print(
            f"the write path alone (no HTTP): {runs[2]['rewards_per_s']:,.0f} vs {runs[3]['rewards_per_s']:,.0f} "
            f"rewards/s: {store_speedup:.1f}x"
        )
    return {
        "database": "postgresql",
        "concurrency": concurrency,
        "modes": [
            {k: v for k, v in run.items() if k not in ("latencies", "commit_wait", "batch_events")} for run in runs
        ],
        "rows": [row.as_json() for row in rows],
        "speedup": speedup,
        "targets": {"rewards_per_s": TARGET_RATE, "speedup": TARGET_SPEEDUP},
        "verdict": "PASS" if verdict else "FAIL",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log_dir = Path(args.out).parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    grouped = await measure("group commit", {}, args.events, args.concurrency, log_dir)
    single = await measure(
        "one insert per event", {"ECO2_PERSIST_BATCH_ROWS": "1"}, args.single_events, args.concurrency, log_dir
    )
    alone = [
        await measure_store(
            "store alone, group commit", int(PersistSettings.batch_rows), args.events, args.concurrency
        ),
        await measure_store("store alone, one insert per event", 1, args.single_events, args.concurrency),
    ]
    return report(Console(), [grouped, single, *alone], args.concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.persist", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="rewards in the group-commit run")
    parser.add_argument("--single-events", type=int, default=5_000, help="rewards in the one-insert-per-event run")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--out", default="results/persist.json")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if results["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
