"""Benchmark of the local runtime: dispatch overhead per hop; then cold start and idle memory of every function.

    .venv/bin/python -m tests.benchmarks.hop [--events N] [--skip-functions] [--out results/hop.json]

1. Hop. The runner's real TriggerConsumer and ingress over the real RabbitMQ (the rig: tests.benchmarks.dispatch)
   deliver to a sink HTTP server in a separate process (uvicorn + Starlette), which records time.time() as each
   delivery reaches its handler; hop = sink received - the x-eco2-published-at stamp. 1 event in flight (pure
   latency), 10 (a saturated dispatcher), the same through the ingress (POST → 202 → sink), then the
   1-in-flight hop once more over the other queue type.
2. Function processes (tests.benchmarks.functions): each Service started exactly as its manifest says
   (`eco2 serve NAME`, a fresh interpreter, the manifest's env) — launch → ready, launch → first event
   answered, and idle RSS, PSS and USS. The local runner starts the same command with the same environment.

Everything it starts (processes, queues, exchanges, Redis job keys) is removed at the end, also on Ctrl-C,
SIGTERM or an error; children also get SIGTERM should this process die (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import aio_pika
import httpx
import uvicorn
from aio_pika.abc import AbstractRobustConnection
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eco2_tools.bench import harness
from eco2_tools.bench.processes import Children, function_env, rabbitmq_pid, wait_ready
from eco2_tools.bench.report import Row, fmt, histogram_row, rows_table, sample_row
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.replicas import free_port
from tests.benchmarks import functions
from tests.benchmarks.dispatch import (
    HOST,
    SATURATED_IN_FLIGHT,
    WARMUP,
    HopRig,
    HopRun,
)

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
TARGET_HOP_P50 = 0.003
HOP_HISTOGRAM_NOTE = "runner's histogram: published → dispatcher got it"
BUDGET_SECONDS = 170.0  # the whole run before teardown; the run must stay under 3 minutes
FUNCTION_RUNS = 3


def sink_env() -> dict[str, str]:
    env = {k: v for k, v in function_env().items() if k != "PORT"}
    return {**env, "HOST": HOST}


# --- the sink (separate process) ---------------------------------------------------------------------------


def serve_sink(port: int) -> None:
    """The subscriber: records time.time() as each delivery reaches its handler, answers 202 (no reply)."""
    receipts: dict[str, float] = {}

    async def event(request: Request) -> Response:
        received = time.time()
        await request.body()
        receipts[request.headers.get("ce-id", "")] = received
        return Response(status_code=202)

    async def dump(_: Request) -> Response:
        return JSONResponse(receipts)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/", event, methods=["POST"]),
            Route("/receipts", dump, methods=["GET"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


def delivery_outcomes(metrics: RunnerMetrics) -> dict[str, float]:
    outcomes: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "eco2_runner_deliveries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] = outcomes.get(sample.labels["outcome"], 0) + sample.value
    return outcomes


def hop_rows(run: HopRun, receipts: dict[str, float], *, target: float | None, title: str) -> list[Row]:
    times = run.times
    hops = [receipts[i] - t for i, t in times.sent.items() if i in receipts]
    lost = len(times.sent) - len(hops)
    rate = len(times.sent) / times.wall if times.wall else 0.0
    note = f"{rate:.0f} events/s" + (f"; {lost} NEVER RECEIVED" if lost else "")
    extra = {"lost": lost, "events_per_second": rate, "cpu_seconds_per_event": run.cpu}
    rows = [sample_row(title, hops, target=target, judged="p50", note=note, extra=extra)]
    ingress = run.key.startswith("ingress")
    if ingress:
        rows.append(sample_row("  POST → 202 (ingress published, confirmed)", times.accepted))
    # With one event in flight the dispatcher's endpoint requests are the events' in order: split the hop.
    if len(times.dispatched) == len(times.sent) and not run.key.endswith("10"):
        ordered = list(times.sent.items())
        before = [d - t for (_, t), d in zip(ordered, times.dispatched, strict=True)]
        after = [receipts[i] - d for (i, _), d in zip(ordered, times.dispatched, strict=True) if i in receipts]
        first = (
            "POST → dispatcher (ingress, RabbitMQ, aio-pika)"
            if ingress
            else "published → dispatcher (RabbitMQ, aio-pika)"
        )
        rows.append(sample_row(f"  {first}", before))
        rows.append(sample_row("  dispatcher → sink (httpx POST, sink's uvicorn)", after))
    if not ingress:
        rows.append(sample_row("  published → confirmed (publisher confirm)", times.accepted))
    rows.append(histogram_row("  eco2_runner_hop_seconds", run.histogram, HOP_HISTOGRAM_NOTE))
    return rows


async def received_by_sink(http: httpx.AsyncClient, sink_url: str) -> dict[str, float]:
    response = await http.get(f"{sink_url}/receipts", timeout=10)
    response.raise_for_status()
    return {str(k): float(v) for k, v in response.json().items()}


async def hop_benchmark(
    console: Console, children: Children, events: int, queue_type: str, out: dict[str, Any]
) -> None:
    rows: list[Row] = []
    out["rows"] = rows
    out["rigs"] = []
    out["cleanup_failures"] = []
    comparison_type = "classic" if queue_type == "quorum" else "quorum"
    sink_port = free_port()
    sink_url = f"http://{HOST}:{sink_port}"
    sink = children.spawn(
        [sys.executable, "-m", "tests.benchmarks.hop", "--serve-sink", str(sink_port)],
        env=sink_env(),
        log_name="sink",
    )
    client = httpx.AsyncClient()
    connection: AbstractRobustConnection | None = None
    try:
        await wait_ready(sink_url, sink)
        connection = await aio_pika.connect_robust(AMQP_URL)
        out["rabbitmq"] = server_version(connection)
        out["rabbitmq_pid_found"] = rabbitmq_pid() is not None
        runs: list[tuple[HopRun, str, float | None]] = []
        for rig_type, keys in ((queue_type, ("broker1", "broker10", "ingress1")), (comparison_type, ("broker1",))):
            rig = HopRig(connection, children.log_dir.parent, rig_type, sink_url, sink.pid)
            out["rigs"].append({"queue_type": rig_type, "prefix": rig.topology.prefix, "queue": rig.plan.queue})
            try:
                await rig.start()
                for key in keys:
                    label, go = rig.plan_for(key)
                    console.print(f"  {rig_type} queue, {key}: {WARMUP} warm-up + {events} events …")
                    run = await rig.measure(key, label, go, events)
                    if key == "broker1" and rig_type == queue_type:
                        title, target = f"hop: published → sink received, {label}", TARGET_HOP_P50
                    elif key == "broker1":
                        title, target = f"same over a {rig_type} queue (comparison)", None
                    elif key == "broker10":
                        title, target = f"hop: published → sink received, {label} (saturated)", None
                    else:
                        title, target = f"end to end: POST ingress → sink received, {label}", None
                    runs.append((run, title, target))
            finally:
                out["cleanup_failures"] += await rig.stop()
                # After stop(): it waits for the deliveries still acking, which count only once acked.
                out.setdefault("deliveries", {})[rig_type] = delivery_outcomes(rig.metrics)
        receipts = await received_by_sink(client, sink_url)
        for run, title, target in runs:
            rows.extend(hop_rows(run, receipts, target=target, title=title))
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        await client.aclose()
        children.stop(sink)


def server_version(connection: AbstractRobustConnection) -> str:
    try:
        transport: Any = connection.transport
        properties = transport.connection.server_properties
        return f"{properties['product']} {properties['version']}"
    except Exception:
        return "unknown"


def cpu_table(rows: Sequence[Row]) -> Table:
    table = Table(title="CPU per event, ms (utime+stime)", title_justify="left", title_style="bold")
    processes = ["runner (dispatcher + ingress/publisher)", "sink", "rabbitmq"]
    table.add_column("run")
    for process in processes:
        table.add_column(process, justify="right")
    table.add_column("events/s", justify="right")
    for row in rows:
        cpu = row.extra.get("cpu_seconds_per_event")
        if cpu is None:
            continue
        table.add_row(row.name, *(fmt(cpu[p], "ms") for p in processes), f"{row.extra.get('events_per_second', 0):.0f}")
    return table


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    harness.cancel_on_sigterm()
    with harness.workspace("eco2-bench-", 4096) as children:
        async with asyncio.timeout(BUDGET_SECONDS):
            console.print(f"[bold]1/2[/] dispatch hop over RabbitMQ at {AMQP_URL.rpartition('@')[2]}")
            results["hop"] = {}
            await hop_benchmark(console, children, args.events, args.queue_type, results["hop"])
            if not args.skip_functions:
                console.print("[bold]2/2[/] function processes as their manifests start them: cold start, idle memory")
                results["functions"] = {}
                await functions.function_benchmark(console, children, FUNCTION_RUNS, results["functions"])


def report(console: Console, results: dict[str, Any]) -> None:
    hop: dict[str, Any] = results.get("hop", {})
    if hop.get("rows"):
        console.print(rows_table("Dispatch hop, ms", hop["rows"]))
        console.print(cpu_table(hop["rows"]))
    functions.report(console, results.get("functions", {}))
    if hop.get("deliveries"):
        console.print(f"deliveries by outcome: {hop['deliveries']}")
    if hop.get("cleanup_failures"):
        console.print(f"[bold red]RabbitMQ cleanup failed:[/] {hop['cleanup_failures']}")
    elif hop.get("rigs"):
        deleted = ", ".join(f"{r['queue']}" for r in hop["rigs"])
        console.print(f"RabbitMQ: deleted {deleted} and their exchanges")


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("hop", __doc__)
    parser.add_argument("--events", type=int, default=2000, help="measured events per hop row (default 2000)")
    parser.add_argument(
        "--queue-type",
        choices=("quorum", "classic"),
        default="quorum",
        help="the Trigger queue's type (default quorum, as eventing/broker-config.yaml); the other is the comparison",
    )
    parser.add_argument("--skip-functions", action="store_true", help="measure the hop only")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sink is not None:
        serve_sink(args.serve_sink)
        return 0
    if not 1 <= args.events <= 10000:
        parser.error("--events must be between 1 and 10000 (the run must stay under 3 minutes)")
    console = harness.wide_console(150)
    machine = harness.machine_info()
    setup = (
        "setup     sink: a separate process (uvicorn + Starlette, h11); dispatcher, ingress and publisher on one "
        "asyncio loop in this process, as in the runner; ingress client in its own thread"
    )
    harness.print_header(console, "Eco² local runtime: hop, cold start, idle memory", machine, [setup])
    config = {
        "events": args.events,
        "warmup": WARMUP,
        "queue_type": args.queue_type,
        "saturated_in_flight": SATURATED_IN_FLIGHT,
        "function_runs": FUNCTION_RUNS,
        "sink": "separate process: uvicorn + Starlette (h11), time.time() on entering its handler",
        "targets": {
            "hop_p50_s": TARGET_HOP_P50,
            "first_event_s": functions.TARGET_FIRST_EVENT,
            "stage_uss_mb": functions.TARGET_STAGE_USS_MB,
        },
    }
    results = harness.new_results("eco2 hop", machine, config)
    code = harness.run_budgeted(run(args, console, results), results, BUDGET_SECONDS)
    report(console, results)
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
