"""Benchmark of the gateway: accept latency of POST /api/v1/scan, and SSE fan-out on one gateway process.

    .venv/bin/python -m tests.benchmarks.gateway [--sink ingress|stub] [--out results/gateway.json]

The gateway is the real one, started as its manifest says and the runner starts it (`eco2 serve gateway`, the
venv's console script; PORT/HOST in the environment, bytecode writes allowed), on Redis DB 13 (or
$ECO2_BENCH_GATEWAY_REDIS_DB; flushed at the start and the end), with ECO2_ENV=production, a random
64-character ECO2_JWT_SECRET, the per-user rate limit raised out of the
way, LOG_LEVEL=INFO (as knative/config.yaml) and every other setting at its default; inherited ECO2_* variables
are dropped. image_url is https://images.eco2-bench.example/…, an origin allowlisted (ECO2_IMAGE_URL_ALLOWLIST)
and trusted (ECO2_IMAGE_URL_TRUSTED), as an operator configures its own upload CDN: this machine has no DNS, an
allowlisted origin is never resolved (eco2.ssrf) and a trusted one is never fetched (eco2.gateway.probe).

1. Accept. K_SINK is the real broker ingress (eco2_tools.local.ingress.create_ingress, as `eco2 up` serves it) in a
   process of its own, over the real RabbitMQ, on a throwaway topology declared from the pack's manifests
   (eco2_tools.local.topology) under the prefix `gwbench-<hex>`: each eco2.scan.requested lands in that topology's
   vision queue (quorum) and the 202 comes after the publisher confirm. `--sink stub` uses a bare uvicorn +
   Starlette process answering 202 instead. Closed loop at 1, 50 and 200 clients: each virtual client is a user
   of its own (its own token from eco2.gateway.auth.issue_token), on a keep-alive connection of a client
   process's aiohttp session (uvloop; a cheap instrument leaves the shared CPU to the gateway), submitting back
   to back with a fresh X-Idempotency-Key; the clients are spread over client processes; warm-up first, then a fixed
   measured window. Then an open loop (Poisson arrivals at half the best closed-loop rate, latency counted from
   the scheduled arrival) for the latency below saturation. Latency = POST sent → 202 received, client side;
   the gateway's own eco2_gateway_accept_seconds histogram over the same window beside it; CPU of every
   process involved (utime+stime from /proc) over the window shows who was busy.
2. SSE fan-out. A fresh gateway process. 1,000 jobs are created with JobStore.create (the job hash's user_id is
   what the gateway checks a stream's caller against), and 1,000 SSE streams (GET /api/v1/scan/{id}/events, each
   as its job's user, each on a client of its own) are opened in steps (1, 100, 1000) from client processes
   (jobs dealt round robin); at each step the gateway's Redis connections are counted (CLIENT LIST entries whose
   source port is a socket of the gateway process, with their client names, and the gateway's gauges). Then
   this process writes vision, rule, answer, reward and done with JobStore.transition for every job at a fixed
   rate; delivery latency = the client's time.time() as the SSE event arrived - the stream entry's `at`
   (time.time() stamped by JobStore.transition as it sends the write); a timeline by write time, per client
   process, tells a stall upstream of the clients (every process sees it) from one of a client. Each stream
   must be closed by the gateway after `done`.

The client processes are instruments: they run with the cyclic GC frozen and off (their pauses would be
counted as the gateway's latency). Everything the benchmark starts (processes, RabbitMQ queues and exchanges,
that Redis DB) is removed at the end, also on Ctrl-C, SIGTERM or an error; children also get SIGTERM should this
process die (PR_SET_PDEATHSIG). The soft RLIMIT_NOFILE is raised when too low for the streams, here and in the
children. The run stays under 3 minutes (a budget of 170 s before teardown).

The rig is tests.benchmarks.gateway_rig, part 1 tests.benchmarks.gateway_accept, part 2 tests.benchmarks.gateway_sse.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import sys
from collections.abc import Sequence
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvloop
from rich.console import Console
from rich.table import Table

from eco2.gateway.context import POOL_CLIENT_NAME, READER_CLIENT_NAME
from eco2_tools.bench import harness
from eco2_tools.bench.processes import raise_nofile
from eco2_tools.bench.report import (
    fmt,
    rows_table,
)
from tests.benchmarks.gateway_accept import (
    AcceptRun,
    _cores,
    accept_benchmark,
    accept_client,
    accept_rows,
    cpu_table,
)
from tests.benchmarks.gateway_rig import (
    ACCEPT_LEVELS,
    ACCEPT_QUANTILES,
    ACCEPT_WARMUP,
    BASELINE_CLIENTS,
    BASELINE_SECONDS,
    BUDGET_SECONDS,
    IMAGE_ORIGIN,
    LIVE_EVENTS_PER_JOB,
    OPEN_LOOP_SHARE,
    OPEN_LOOP_USERS,
    POOL_SIZE,
    REDIS_DB,
    REDIS_URL,
    SEED_TARGET_ACCEPT_P99,
    SSE_STEPS,
    TARGET_ACCEPT_P99,
    TARGET_SSE_P99,
    Sink,
    claimed_db,
    emit,
    remove_sink,
    serve_ingress,
    serve_stub,
    start_sink,
)
from tests.benchmarks.gateway_sse import (
    TIMELINE_WINDOW,
    Step,
    sse_benchmark,
    sse_client,
)


def timeline_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(
        title=f"SSE delivery by write time ({TIMELINE_WINDOW:g} s windows), ms",
        title_justify="left",
        title_style="bold",
    )
    for column in ("written at (s)", "events", "p50", "p99", "max", "p99 per client process"):
        table.add_column(column, justify="right")
    for row in rows:
        per = " / ".join(fmt(x) for x in row["p99_by_client_process"])
        table.add_row(
            f"{row['from_s']:.1f}", str(row["events"]), fmt(row["p50"]), fmt(row["p99"]), fmt(row["max"]), per
        )
    return table


def connections_table(steps: Sequence[Step], after: dict[str, Any] | None, limit: int) -> Table:
    table = Table(
        title="Gateway's Redis connections by open SSE streams (CLIENT LIST entries from the gateway's own sockets)",
        title_justify="left",
        title_style="bold",
    )
    for column in (
        "SSE streams",
        "Redis conns",
        POOL_CLIENT_NAME,
        READER_CLIENT_NAME,
        "gauge sse_clients",
        "gauge reader_conns",
        "gauge watched",
        "RSS MB",
        "open (s)",
    ):
        table.add_column(column, justify="right")

    def row(label: str, redis: dict[str, Any], gauges: dict[str, float], rss: float | None, took: str) -> None:
        names = redis.get("by_name", {})
        table.add_row(
            label,
            str(redis.get("total")),
            str(names.get(POOL_CLIENT_NAME, 0)),
            str(names.get(READER_CLIENT_NAME, 0)),
            f"{gauges.get('eco2_gateway_sse_clients', float('nan')):.0f}",
            f"{gauges.get('eco2_gateway_redis_reader_connections', float('nan')):.0f}",
            f"{gauges.get('eco2_gateway_watched_streams', float('nan')):.0f}",
            "—" if rss is None else f"{rss:.0f}",
            took,
        )

    for step in steps:
        row(str(step.streams), step.redis, step.gauges, step.rss_mb, f"{step.open_seconds:.2f}")
    if after:
        row("0 (all ended)", after["redis"], after["gauges"], None, "")
    table.caption = f"pool bound: ECO2_REDIS_MAX_CONNECTIONS = {limit} (default) + 1 reader"
    return table


def connections_verdict(steps: Sequence[Step], limit: int) -> dict[str, Any]:
    """PASS when the count is bounded by the pool size + the one reader at every N, with exactly one reader."""
    counts = {step.streams: int(step.redis.get("total", 0)) for step in steps}
    readers = {step.streams: int(step.redis.get("by_name", {}).get(READER_CLIENT_NAME, 0)) for step in steps}
    bound = limit + 1
    ok = bool(counts) and all(c <= bound for c in counts.values()) and all(r == 1 for r in readers.values())
    return {"counts": counts, "readers": readers, "bound": bound, "verdict": "PASS" if ok else "FAIL"}


def header_lines(nofile: tuple[int, int]) -> list[str]:
    return [
        f"limits    RLIMIT_NOFILE soft/hard {nofile}",
        "gateway   `eco2 serve gateway`, the manifest's command (uvicorn; uvloop + httptools: fast_http), "
        f"one process, Redis DB {REDIS_DB}, LOG_LEVEL=INFO, ECO2_REDIS_MAX_CONNECTIONS={POOL_SIZE} (default), "
        "rate limit out of the way",
    ]


# --- main --------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    harness.cancel_on_sigterm()
    secret = secrets.token_urlsafe(48)  # 64 characters: HS256 wants at least 32 bytes
    with harness.workspace("eco2-gwbench-", int(results["config"]["nofile_wanted"])) as children:
        redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
        http = httpx.AsyncClient(timeout=30)
        sink: Sink | None = None
        try:
            async with asyncio.timeout(BUDGET_SECONDS), claimed_db(redis, results):
                sink = await start_sink(children, args.sink)
                results["sink"] = {"kind": sink.kind, "description": sink.description}
                console.print(f"sink      {sink.description}")
                console.print("[bold]1/2[/] accept latency")
                results["accept"] = {}
                await accept_benchmark(console, children, http, sink, secret, args, results["accept"])
                console.print(f"[bold]2/2[/] SSE fan-out, {args.sse_streams} streams on one gateway process")
                results["sse"] = {}
                await sse_benchmark(console, children, http, redis, sink, secret, args, results["sse"])
        finally:
            children.stop_all()
            await http.aclose()
            await remove_sink(sink, results)
            await redis.aclose()


def report(console: Console, results: dict[str, Any], machine: dict[str, Any]) -> None:
    accept: dict[str, Any] = results.get("accept", {})
    sse: dict[str, Any] = results.get("sse", {})
    verdicts: dict[str, str] = {}
    runs: list[AcceptRun] = accept.get("runs", [])
    if runs:
        rows = accept_rows(runs)
        accept["rows"] = rows
        console.print(rows_table("Accept: POST /api/v1/scan → 202, ms, client side", rows, ACCEPT_QUANTILES))
        console.print(cpu_table(runs, int(machine["nproc"])))
        for row in rows:
            if row.verdict is not None and not row.name.startswith("open loop"):
                verdicts[f"accept p99 ≤ 20 ms, {row.name.split(':')[0]}"] = row.verdict
        best = max((r for r in runs if r.offered is None), key=lambda r: r.rate)
        accept["max_accepted_per_second"] = {"rate": round(best.rate, 1), "at_clients": best.clients}
        console.print(f"max accepted scans/s: [bold]{best.rate:.0f}[/] (at {best.label}, one gateway process)")
        queued = results.get("rabbitmq", {}).get("vision_queue_messages")
        if queued is not None:
            console.print(
                f"scan.requested in the benchmark's vision queue: {queued}; 202s the clients got "
                f"(warm-ups included): {accept.get('accepted_total')}"
            )
    if sse.get("rows"):
        console.print(rows_table("SSE fan-out on one gateway process, ms", sse["rows"], ACCEPT_QUANTILES))
        if sse.get("timeline"):
            console.print(timeline_table(sse["timeline"]))
        verdicts[f"SSE delivery p99 ≤ 50 ms, {results['config']['sse_streams']} streams"] = sse["rows"][0].verdict
    limit = POOL_SIZE
    if sse.get("steps"):
        console.print(connections_table(sse["steps"], sse.get("after"), limit))
        bounded = connections_verdict(sse["steps"], limit)
        sse["connections_verdict"] = bounded
        verdicts[f"Redis connections bounded (≤ {bounded['bound']}, 1 reader) at every N"] = bounded["verdict"]
        cores = sse.get("cores_during_writes", {})
        console.print(
            f"during the writes: gateway {_cores(cores.get('gateway'))} cores, redis {_cores(cores.get('redis'))}; "
            f"streams still open at collect: {sse.get('streams_still_open_at_collect')}; "
            f"stream failures: {len(sse.get('stream_failures', []))}"
        )
    if verdicts:
        table = Table(title="Targets", title_justify="left", title_style="bold")
        table.add_column("target")
        table.add_column("")
        for name, verdict in verdicts.items():
            table.add_row(name, f"[bold {'green' if verdict == 'PASS' else 'red'}]{verdict}[/]")
        console.print(table)
        results["verdicts"] = verdicts
    cleanup = results.get("rabbitmq", {})
    if cleanup.get("cleanup_failures"):
        console.print(f"[bold red]RabbitMQ cleanup failed:[/] {cleanup['cleanup_failures']}")
    elif cleanup.get("deleted"):
        deleted = cleanup["deleted"]
        console.print(
            f"RabbitMQ: deleted {deleted['queues']} queues and {deleted['exchanges']} exchanges of {deleted['prefix']}"
        )
    if "redis_db_keys_before" in results:
        console.print(
            f"Redis DB {REDIS_DB}: {results['redis_db_keys_before']} keys before (flushed), "
            f"flushed at the end: {results.get('redis_db_flushed')}"
        )
    else:
        console.print(f"Redis DB {REDIS_DB}: not touched")


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("gateway", __doc__)
    parser.add_argument(
        "--sink",
        choices=("ingress", "stub"),
        default="ingress",
        help="K_SINK: the real broker ingress over RabbitMQ (default) or a stub answering 202",
    )
    parser.add_argument("--accept-seconds", type=float, default=12.0, help="measured seconds per concurrency level")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--sse-streams", type=int, default=1000, help="concurrent SSE streams (default 1000)")
    parser.add_argument("--sse-rate", type=int, default=1000, help="stage transitions written per second")
    parser.add_argument("--serve-ingress", nargs=2, metavar=("PORT", "PREFIX"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--accept-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sse-client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_ingress is not None:
        serve_ingress(int(args.serve_ingress[0]), args.serve_ingress[1])
        return 0
    if args.serve_stub is not None:
        serve_stub(args.serve_stub)
        return 0
    if args.accept_client or args.sse_client:
        # The clients are instruments: a GC pause of theirs (100+ ms with 500 streams) would show up as latency
        # of the gateway. They live for seconds, so they run without the cyclic collector.
        gc.freeze()
        gc.disable()
        config: dict[str, Any] = json.loads(sys.stdin.readline())
        try:
            if args.accept_client:
                uvloop.run(accept_client(config))
            else:
                asyncio.run(sse_client(config))
        except Exception as exc:
            emit({"error": f"{type(exc).__name__}: {exc}"})
            raise
        return 0
    if not 1 <= args.accept_seconds <= 30:
        parser.error("--accept-seconds must be between 1 and 30 (the run must stay under 3 minutes)")
    if not 1 <= args.client_procs <= 16:
        parser.error("--client-procs must be between 1 and 16")
    if not 1 <= args.sse_streams <= 5000:
        parser.error("--sse-streams must be between 1 and 5000")
    if not 100 <= args.sse_rate <= 20000 or args.sse_streams * LIVE_EVENTS_PER_JOB / args.sse_rate > 30:
        parser.error("--sse-rate must be 100-20000 and the writes must take at most 30 s")

    nofile_wanted = 2 * args.sse_streams + 1024
    nofile = raise_nofile(nofile_wanted)
    console = harness.wide_console(170)
    machine = harness.machine_info()
    harness.print_header(console, "Eco² gateway: accept latency and SSE fan-out", machine, header_lines(nofile))
    config = {
        "sink": args.sink,
        "redis_url": REDIS_URL,
        "image_origin_allowlisted": IMAGE_ORIGIN,
        "accept_levels": [BASELINE_CLIENTS, *ACCEPT_LEVELS],
        "open_loop": {"share_of_best_rate": OPEN_LOOP_SHARE, "users": OPEN_LOOP_USERS},
        "accept_seconds": args.accept_seconds,
        "baseline_seconds": BASELINE_SECONDS,
        "accept_warmup_seconds": ACCEPT_WARMUP,
        "client_processes": args.client_procs,
        "client": "one httpx.AsyncClient (one keep-alive connection) and one user per virtual client",
        "sse_streams": args.sse_streams,
        "sse_steps": list(SSE_STEPS),
        "sse_rate": args.sse_rate,
        "nofile_wanted": nofile_wanted,
        "nofile": list(nofile),
        "gateway_env": "ECO2_ENV=production, LOG_LEVEL=INFO, rate limit 1e9, other settings default",
        "targets": {
            "accept_p99_s": TARGET_ACCEPT_P99,
            "seed_accept_p99_s": SEED_TARGET_ACCEPT_P99,
            "sse_delivery_p99_s": TARGET_SSE_P99,
            "redis_connections": "bounded by the pool size + 1 reader, not per client",
        },
    }
    results = harness.new_results("eco2 gateway", machine, config)
    code = harness.run_budgeted(run(args, console, results), results, BUDGET_SECONDS)
    report(console, results, machine)
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
