"""The bench's run: each runtime started, measured through every phase, stopped; then the table and files."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from eco2 import keys
from eco2.jobs import JobStore
from eco2_tools.bench import figures, load, output, procs
from eco2_tools.bench.harness import (
    BenchError,
    cancel_on_sigterm,
    machine_info,
    new_results,
    print_header,
    run_budgeted,
    workspace,
)
from eco2_tools.bench.processes import Children, cpu_seconds
from eco2_tools.bench.runtimes import Runtime, start_fleet, start_pack, stop_fleet, stop_pack

NOFILE = 65536
BUDGET_SECONDS = 3600.0


def main(args: argparse.Namespace, runtimes: list[str], console: Console, run_id: str, env: dict[str, str]) -> int:
    machine = machine_info()
    results = new_results("bench", machine, config_of(args, runtimes))
    results["runtimes"] = {}
    print_header(console, "eco2 bench", machine, [f"run {run_id}: {', '.join(runtimes)}"])
    with workspace("eco2-bench-", NOFILE) as children:
        code = run_budgeted(_all(args, runtimes, console, run_id, env, children, results), results, BUDGET_SECONDS)
    results["comparison"] = figures.compare(results["runtimes"])
    console.print(output.comparison_table(results["comparison"]))
    console.print("A shared 2-core machine: every figure is noisy; compare the two columns of one run.")
    out: Path = args.out
    output.write_json(results, out / "bench.json")
    output.write_chart(results["comparison"], out / "bench.png", f"{machine['nproc']} cores, run {run_id}")
    console.print(f"written: {out / 'bench.json'}, {out / 'bench.png'}")
    if "error" in results:
        console.print(f"[bold red]error:[/] {results['error']}")
    return code


async def _all(
    args: argparse.Namespace,
    runtimes: list[str],
    console: Console,
    run_id: str,
    env: dict[str, str],
    children: Children,
    results: dict[str, Any],
) -> None:
    cancel_on_sigterm()
    store = JobStore.from_url(env.get("REDIS_URL") or "redis://127.0.0.1:6379/0", ttl_seconds=3600)
    try:
        with progress_bar(console) as progress:
            for name in runtimes:
                console.print(f"[bold]{name}[/]: starting")
                try:
                    runtime = _start(name, args, env, children, run_id)
                    try:
                        prefix = f"bench-{run_id}-{name}"
                        results["runtimes"][name] = await measure(runtime, store, args, progress, prefix)
                    finally:
                        await _stop(runtime, env, children, run_id)
                except TimeoutError as exc:
                    # Not the bench's budget (run_budgeted's reading of a TimeoutError): a server that hung.
                    raise BenchError(f"{name}: a server did not answer in time ({exc or 'timed out'})") from exc
    finally:
        await _forget_jobs(store, f"bench-{run_id}-")
        await store.aclose()


def _pack_state_dir(children: Children) -> Path:
    return children.log_dir.parent / "pack"


def _start(name: str, args: argparse.Namespace, env: dict[str, str], children: Children, run_id: str) -> Runtime:
    if name == "pack":
        return start_pack(env, _pack_state_dir(children), run_id)
    return start_fleet(env, children, run_id, args.concurrency)


async def _stop(runtime: Runtime, env: dict[str, str], children: Children, run_id: str) -> None:
    if runtime.name == "pack":
        await stop_pack(env, _pack_state_dir(children), run_id)
    else:
        stop_fleet(runtime, children, env, run_id)


async def measure(
    runtime: Runtime, store: JobStore, args: argparse.Namespace, progress: Progress, prefix: str
) -> dict[str, Any]:
    await asyncio.sleep(args.settle)
    measured: dict[str, Any] = {"idle": figures.idle_summary(procs.memory_by_label(runtime.processes()))}
    if args.warmup:
        await _burst(runtime, store, args, progress, f"{prefix}-warmup", args.warmup, "warm-up")
    before_procs = runtime.with_services()
    before, driver_before = procs.cpu(before_procs), cpu_seconds(os.getpid()) or 0.0
    zero = await _burst(runtime, store, args, progress, f"{prefix}-zero", args.scans, "zero-latency")
    after_procs = runtime.with_services()
    spent = procs.cpu_by_label(after_procs, before, procs.cpu(after_procs))
    spent["bench driver"] = (cpu_seconds(os.getpid()) or 0.0) - driver_before
    measured["zero_latency"] = figures.burst_summary(zero)
    measured["cpu"] = figures.cpu_summary(spent, zero.done)
    runtime.set_latency(args.seed_scale)
    try:
        seed = await _burst(runtime, store, args, progress, f"{prefix}-seed", args.seed_scans, "seed latencies")
    finally:
        runtime.set_latency(0.0)
    measured["seed"] = figures.with_overhead(figures.burst_summary(seed), args.seed_scale)
    return measured


async def _burst(
    runtime: Runtime, store: JobStore, args: argparse.Namespace, progress: Progress, prefix: str, n: int, what: str
) -> load.BurstResult:
    task = progress.add_task(f"{runtime.name:7} {what}", total=n)
    result = await load.burst(
        runtime, store, prefix, n, timeout=args.timeout, on_finished=lambda k: progress.advance(task, k)
    )
    if result.failed or result.unfinished or result.send_errors:
        progress.console.print(
            f"[yellow]{runtime.name} {what}: {result.failed} failed, {result.unfinished} unfinished, "
            f"{result.send_errors} not sent[/]"
        )
    return result


async def _forget_jobs(store: JobStore, prefix: str) -> None:
    """The bench's jobs would otherwise stay a day (their TTL) in the Redis it shares."""
    batch: list[str] = []
    async for key in store.redis.scan_iter(match=f"{keys.job(prefix)}*", count=1000):
        batch.append(key if isinstance(key, str) else key.decode())
        if len(batch) >= 1000:
            await store.redis.delete(*batch)
            batch.clear()
    if batch:
        await store.redis.delete(*batch)


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def config_of(args: argparse.Namespace, runtimes: list[str]) -> dict[str, Any]:
    return {
        "runtimes": runtimes,
        "zero_latency_scans": args.scans,
        "seed_scans": args.seed_scans,
        "seed_latency_scale": args.seed_scale,
        "warmup_scans": args.warmup,
        "celery_concurrency": args.concurrency,
        "scans_enter": "straight into each runtime's broker (pack: the ingress; Celery: the chain's publish)",
    }
