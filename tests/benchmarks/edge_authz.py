"""What the edge's authz check costs a submit: POST /api/v1/scan at 50 users open loop, straight to the gateway
and through the edge, side by side in one run.

    .venv/bin/python -m tests.benchmarks.edge_authz [--rounds 3] [--seconds 10] [--out results/edge_authz.json]

The rig is the gateway benchmark's (tests.benchmarks.gateway_rig, gateway_accept): the real gateway process as its
manifest starts it, the real broker ingress over RabbitMQ as its K_SINK (a throwaway topology), Redis DB 13 (or
$ECO2_BENCH_GATEWAY_REDIS_DB; flushed before and after), client processes on aiohttp + uvloop, 50 users each with
their own token, Poisson arrivals at 50/s (each user about once a second), latency from the scheduled arrival to
the 202. Beside them: the real authz (`eco2 serve authz`, same JWT secret, its blacklist warmed up) and the
runner's edge (eco2_tools.local.edge.Edge on the runner's aiohttp session, as `eco2 up` serves it on the
gateway's port) in a process of its own. Rounds alternate between the two paths, so the machine's noise falls on
both; each path's figures are over all its rounds. The gateway checks the token itself on both paths. CPU of every
process over each measured window (utime+stime from /proc) says what the extra hop costs per scan, and where.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from rich.console import Console
from rich.table import Table

from eco2_tools.bench import harness
from eco2_tools.bench.harness import BenchError
from eco2_tools.bench.processes import Children, function_env, rabbitmq_pid, wait_ready
from eco2_tools.bench.report import fmt, percentile
from eco2_tools.local.client import runner_session
from eco2_tools.local.dispatcher import Endpoint
from eco2_tools.local.edge import Edge
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.processes import container_command
from eco2_tools.local.replicas import free_port
from tests.benchmarks.gateway_accept import AcceptRun, accept_run
from tests.benchmarks.gateway_rig import (
    AMQP_URL,
    HOST,
    REDIS_URL,
    Sink,
    claimed_db,
    gateway_env,
    redis_pid,
    remove_sink,
    start_gateway,
    start_sink,
)

USERS = 50
RATE = 50.0  # arrivals per second: each user about once a second
PATHS = ("without", "with")
BUDGET_SECONDS = 300.0


def serve_edge(port: int, authz_url: str, gateway_url: str) -> None:
    """The runner's edge in front of one authz and one gateway process (the runner picks a replica per request)."""
    urls = {"authz": authz_url, "gateway": gateway_url}

    async def main() -> None:
        async with runner_session() as http:

            async def endpoints(service: str) -> Endpoint:
                return Endpoint(urls[service], lambda: None)

            app = Edge(endpoints, http, RunnerMetrics())
            config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")
            await uvicorn.Server(config).serve()

    asyncio.run(main())


async def start_authz(children: Children, sink_url: str, secret: str) -> tuple[str, int]:
    port = free_port()
    env = gateway_env(sink_url, secret, port, free_port()) | {"AMQP_URL": AMQP_URL}
    process = children.spawn(container_command(("eco2", "serve", "authz")), env=env, log_name="authz")
    url = f"http://{HOST}:{port}"
    try:
        await wait_ready(url, process)
    except BenchError as exc:
        raise BenchError(f"authz: {exc}\n{children.log_tail('authz')}") from None
    return url, process.pid


async def start_edge(children: Children, authz_url: str, gateway_url: str) -> tuple[str, int]:
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.edge_authz", "--serve-edge", str(port), authz_url, gateway_url]
    env = {k: v for k, v in function_env().items() if not k.startswith("ECO2_")}
    process = children.spawn(command, env=env, log_name="edge")
    url = f"http://{HOST}:{port}"
    try:
        await wait_ready(url, process)  # /healthz is an open path: the gateway's answer, through the edge
    except BenchError as exc:
        raise BenchError(f"edge: {exc}\n{children.log_tail('edge')}") from None
    return url, process.pid


async def measure(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    harness.cancel_on_sigterm()
    secret = secrets.token_urlsafe(48)
    with harness.workspace("eco2-edgebench-", 4096) as children:
        redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
        http = httpx.AsyncClient(timeout=30)
        sink: Sink | None = None
        try:
            async with asyncio.timeout(BUDGET_SECONDS), claimed_db(redis, results):
                sink = await start_sink(children, "ingress")
                gateway = await start_gateway(children, sink.url, secret, "edge")
                authz_url, authz_pid = await start_authz(children, sink.url, secret)
                edge_url, edge_pid = await start_edge(children, authz_url, gateway.url)
                pids = {
                    "gateway": gateway.process.pid,
                    "authz": authz_pid,
                    "edge": edge_pid,
                    "ingress": sink.process.pid,
                    "redis": redis_pid(),
                    "rabbitmq": rabbitmq_pid(),
                }
                runs: list[AcceptRun] = []
                results["runs"] = runs
                for round_ in range(args.rounds):
                    for path in PATHS:
                        label = f"{path} the edge, round {round_ + 1}"
                        console.print(f"  {label}: {USERS} users, Poisson {RATE:.0f}/s, {args.seconds:.0f} s …")
                        runs.append(
                            await accept_run(
                                children,
                                http,
                                gateway,
                                pids,
                                secret,
                                clients=USERS,
                                seconds=float(args.seconds),
                                procs=2,
                                label=label,
                                rate=RATE,
                                client_url=edge_url if path == "with" else None,
                            )
                        )
        finally:
            children.stop_all()
            await http.aclose()
            await remove_sink(sink, results)
            await redis.aclose()


def _quantiles(run: AcceptRun) -> dict[str, Any]:
    values = sorted(run.latencies)
    p50, p99 = (percentile(values, q) if values else None for q in (0.50, 0.99))
    return {"label": run.label, "p50_s": p50, "p99_s": p99}


def summarize(runs: Sequence[AcceptRun]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for path in PATHS:
        mine = [run for run in runs if run.label.split(" ", 1)[0] == path]
        latencies = sorted(x for run in mine for x in run.latencies)
        accepted = sum(run.statuses.get("202", 0) for run in mine)
        refused = {k: v for run in mine for k, v in run.statuses.items() if k != "202"}
        seconds = sum(run.seconds for run in mine)
        cpu_ms: dict[str, float | None] = {}
        for process in ("gateway", "authz", "edge", "ingress", "redis"):
            cores = [run.cores.get(process) for run in mine]
            known = [c * run.seconds for c, run in zip(cores, mine, strict=True) if c is not None]
            cpu_ms[process] = 1000 * sum(known) / accepted if known and accepted else None
        figures[path] = {
            "rounds": len(mine),
            "accepted": accepted,
            "not_202": refused,
            "accepted_per_second": accepted / seconds if seconds else 0.0,
            "p50_s": percentile(latencies, 0.50) if latencies else None,
            "p90_s": percentile(latencies, 0.90) if latencies else None,
            "p99_s": percentile(latencies, 0.99) if latencies else None,
            "max_s": latencies[-1] if latencies else None,
            "cpu_ms_per_scan": cpu_ms,
            "by_round": [_quantiles(run) for run in mine],
        }
    return figures


def report(console: Console, figures: dict[str, dict[str, Any]]) -> None:
    title = f"POST /api/v1/scan → 202, {USERS} users open loop (Poisson {RATE:.0f}/s)"
    table = Table(title=title, title_justify="left")
    for column in ("figure", "without the edge", "with the edge", "difference"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    without, with_ = figures["without"], figures["with"]
    for quantile in ("p50_s", "p90_s", "p99_s", "max_s"):
        a, b = without[quantile], with_[quantile]
        diff = None if a is None or b is None else b - a
        table.add_row(f"latency {quantile[:-2]} (ms)", fmt(a), fmt(b), "—" if diff is None else f"{diff * 1000:+.2f}")
    table.add_row("accepted/s", f"{without['accepted_per_second']:.1f}", f"{with_['accepted_per_second']:.1f}", "")
    table.add_row("not 202", str(without["not_202"] or "none"), str(with_["not_202"] or "none"), "")
    for process in ("gateway", "authz", "edge", "ingress", "redis"):
        a, b = without["cpu_ms_per_scan"][process], with_["cpu_ms_per_scan"][process]
        diff = "—" if a is None or b is None else f"{b - a:+.3f}"
        cells = ["—" if v is None else f"{v:.3f}" for v in (a, b)]
        table.add_row(f"CPU per scan, {process} (ms)", *cells, diff)
    console.print(table)
    for path in PATHS:
        rounds = ", ".join(f"{fmt(r['p50_s'])} / {fmt(r['p99_s'])}" for r in figures[path]["by_round"])
        console.print(f"{path} the edge, p50 / p99 by round (ms): {rounds}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("edge_authz", __doc__)
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each path once per round (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round and path")
    parser.add_argument("--serve-edge", nargs=3, metavar=("PORT", "AUTHZ", "GATEWAY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_edge is not None:
        serve_edge(int(args.serve_edge[0]), args.serve_edge[1], args.serve_edge[2])
        return 0
    if not 1 <= args.rounds <= 5 or not 2 <= args.seconds <= 20:
        parser.error("--rounds must be 1-5 and --seconds 2-20 (the run must stay under 5 minutes)")
    console = harness.wide_console(140)
    machine = harness.machine_info()
    harness.print_header(console, "Eco² edge: what asking authz first costs a submit", machine)
    config = {"users": USERS, "rate_per_second": RATE, "rounds": args.rounds, "seconds": args.seconds}
    results = harness.new_results("eco2 edge authz", machine, config)
    code = harness.run_budgeted(measure(args, console, results), results, BUDGET_SECONDS)
    if results.get("runs"):
        results["figures"] = summarize(results["runs"])
        report(console, results["figures"])
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
