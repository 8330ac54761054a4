"""Cold start and idle memory of every function, started exactly as its Knative manifest says.

    .venv/bin/python -m tests.benchmarks.functions [--runs N] [--out results/functions.json]

(also part 2 of `python -m tests.benchmarks.hop`). Redis for the functions' job keys: $ECO2_BENCH_REDIS_URL
(default redis://127.0.0.1:6379/9); the keys of the benchmark's jobs are deleted at the end.

Each Service of knative/ is started as its container command — `eco2 serve NAME`, the venv's console script
found as eco2_tools.local.processes finds it, a fresh interpreter — with the manifest's `env` and what the local
runner gives every function process (REDIS_URL, K_SINK, OPENAI_BASE_URL of the stand-in model, ECO2_ENV): the
very command and environment a pod runs and the local runner starts, so the runner's figure is this one.
Timed from the launch to (a) GET /readyz 200 (GET /healthz where /readyz is 404) and (b) the first event
answered 2xx: a real CloudEvent of the type its Trigger delivers (vision's includes one call to the stand-in
model, latency scaled to 1 %), POSTed again while the port still refuses connections; for the gateway, (b) is
its first GET /healthz answered; with (b), the process's CPU time (utime + stime) so far, which a loaded machine
stretches far less than the wall-clock times. Then its idle memory 0.5 s later: RSS (VmRSS), PSS, and USS
(Private_Clean + Private_Dirty: what the process alone holds) from /proc/<pid>/smaps_rollup. Finally all of them
idle at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from rich.console import Console

from eco2.events import (
    Classification,
    EventType,
    FinalAnswer,
    ScanAnswered,
    ScanClassified,
    ScanRequested,
    ScanRuled,
    new_event,
)
from eco2_tools.bench import harness
from eco2_tools.bench.harness import BenchError
from eco2_tools.bench.processes import ROOT, Children, cpu_seconds, function_env, proc_memory
from eco2_tools.bench.report import Row, rows_table, sample_row
from eco2_tools.local.processes import container_command
from eco2_tools.local.replicas import free_port
from eco2_tools.manifests import Manifests, ServiceSpec

REDIS_URL = os.environ.get("ECO2_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
HOST = "127.0.0.1"
IDLE_BEFORE_MEMORY = 0.5
POLL_INTERVAL = 0.005
START_TIMEOUT = 30.0
BUDGET_SECONDS = 170.0
TARGET_FIRST_EVENT = 0.5
TARGET_STAGE_USS_MB = 45.0  # MB = 10**6 bytes


def event_for(function: str, job_id: str, standin_url: str) -> CloudEvent | None:
    """A CloudEvent of the type the function's Trigger delivers; None for the gateway (no events)."""
    requested = ScanRequested(job_id=job_id, user_id="bench-user", image_url=f"{standin_url}/samples/glass_bottle.png")
    classified = ScanClassified(
        **requested.model_dump(), classification=Classification(major_category="재활용폐기물", middle_category="유리병")
    )
    ruled = ScanRuled(**classified.model_dump(), rule_id=None)
    answered = ScanAnswered(**ruled.model_dump(), final_answer=FinalAnswer(disposal_steps=("rinse",), user_answer="ok"))
    events: dict[str, tuple[EventType, Any]] = {
        "vision": (EventType.SCAN_REQUESTED, requested),
        "rules": (EventType.SCAN_CLASSIFIED, classified),
        "answer": (EventType.SCAN_RULED, ruled),
        "reward": (EventType.SCAN_ANSWERED, answered),
        "dead-letter": (EventType.SCAN_REQUESTED, requested),
    }
    if function not in events:
        return None
    event_type, data = events[function]
    event = new_event(event_type, data, source="/eco2/bench", job_id=job_id)
    if function == "dead-letter":
        event["knativeerrordest"], event["knativeerrorcode"] = "http://vision.eco2.svc", "500"
    return event


@dataclass
class ColdStart:
    function: str
    ready: float  # launch → /readyz (or /healthz) 200, seconds
    answered: float  # launch → first event answered 2xx
    # The process's CPU (utime + stime) when its first event was answered: what its start cost, which a loaded
    # machine stretches far less than the wall-clock times above.
    cpu: float
    memory_kb: dict[str, int]  # the idle process: /proc/<pid>/status and smaps_rollup fields, and USS

    def mb(self, name: str) -> float:
        return self.memory_kb[name] * 1024 / 1e6


async def first_2xx(process: subprocess.Popen[bytes], attempt: Callable[[], Awaitable[httpx.Response]]) -> float:
    """Retry `attempt` while the port refuses connections (or /readyz is not 200 yet); when the first 2xx came."""
    while True:
        if process.poll() is not None:
            raise BenchError(f"exited with {process.returncode} while starting")
        try:
            response = await attempt()
        except httpx.ConnectError:
            await asyncio.sleep(POLL_INTERVAL)
            continue
        if 200 <= response.status_code < 300:
            return time.perf_counter()
        if response.status_code != 503:
            raise BenchError(f"answered {response.status_code}: {response.text[:300]}")
        await asyncio.sleep(POLL_INTERVAL)


@dataclass
class Rig:
    """Starts functions as their manifests say and times them."""

    children: Children
    http: httpx.AsyncClient
    services: dict[str, ServiceSpec]
    env: dict[str, str]
    standin_url: str
    job_ids: list[str] = field(default_factory=list)
    urls: dict[int, str] = field(default_factory=dict)  # pid → base URL of each function started

    def _ready_probe(self, url: str) -> Callable[[], Awaitable[httpx.Response]]:
        async def probe() -> httpx.Response:
            response = await self.http.get(f"{url}/readyz")
            return await self.http.get(f"{url}/healthz") if response.status_code == 404 else response

        return probe

    def _event_post(self, function: str, url: str) -> Callable[[], Awaitable[httpx.Response]]:
        job_id = f"bench-{uuid.uuid4().hex}"
        self.job_ids.append(job_id)
        event = event_for(function, job_id, self.standin_url)
        if event is None:
            return lambda: self.http.get(f"{url}/healthz")
        headers, body = to_binary(event)
        return lambda: self.http.post(f"{url}/", headers=dict(headers), content=body)

    async def start(self, function: str, tag: str) -> tuple[subprocess.Popen[bytes], float, float, float]:
        service = self.services[function]
        port = free_port()
        url = f"http://{HOST}:{port}"
        # As the runner: the manifest's env, each process its own metrics port (a pod has the manifest's to itself).
        ports = {"PORT": str(port), "HOST": HOST, "ECO2_METRICS_PORT": str(free_port())}
        env = {**function_env(), **service.env, **self.env, **ports}
        post, log_name = self._event_post(function, url), f"{function}-{tag}"
        launched = time.perf_counter()
        process = self.children.spawn(container_command(service.command), env=env, log_name=log_name)
        self.urls[process.pid] = url
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready, answered = await asyncio.gather(
                    first_2xx(process, self._ready_probe(url)), first_2xx(process, post)
                )
        except (BenchError, TimeoutError) as exc:
            self.children.stop(process)
            reason = str(exc) or f"no answer in {START_TIMEOUT:.0f}s"
            raise BenchError(f"{function} ({tag}): {reason}\n{self.children.log_tail(log_name)}") from None
        return process, ready - launched, answered - launched, cpu_seconds(process.pid) or 0.0

    async def cold_start(self, function: str, tag: str) -> ColdStart:
        process, ready, answered, cpu = await self.start(function, tag)
        try:
            await asyncio.sleep(IDLE_BEFORE_MEMORY)
            return ColdStart(function, ready, answered, cpu, proc_memory(process.pid))
        finally:
            self.children.stop(process)

    async def all_at_once(self) -> dict[str, float]:
        """Σ RSS, PSS and USS (MB) of every function idle at once: the whole pack at rest, one replica each."""
        started: list[subprocess.Popen[bytes]] = []
        try:
            for function in self.services:
                started.append((await self.start(function, "together"))[0])
            await asyncio.sleep(IDLE_BEFORE_MEMORY)
            memories = [proc_memory(process.pid) for process in started]
        finally:
            for process in started:
                self.children.stop(process)
        return {name: sum(m[name] for m in memories) * 1024 / 1e6 for name in ("VmRSS", "Pss", "USS")}


def function_rows(function: str, runs: Sequence[ColdStart]) -> list[Row]:
    mine = [r for r in runs if r.function == function]
    stage = function != "gateway"
    first = "first request answered (GET /healthz)" if not stage else "first event answered"
    measurements: list[tuple[str, Callable[[ColdStart], float], str, float | None]] = [
        ("launch → ready", lambda r: r.ready, "s", None),
        (f"launch → {first}", lambda r: r.answered, "s", TARGET_FIRST_EVENT if stage else None),
        (f"CPU until {first.split(' (')[0]}", lambda r: r.cpu, "s", None),
        ("idle RSS", lambda r: r.mb("VmRSS"), "MB", None),
        ("idle PSS", lambda r: r.mb("Pss"), "MB", None),
        ("idle USS", lambda r: r.mb("USS"), "MB", TARGET_STAGE_USS_MB if stage else None),
    ]
    return [
        sample_row(f"{function}: {what}", [value(r) for r in mine], unit=unit, target=target, judged="p50")
        for what, value, unit, target in measurements
    ]


async def forget_jobs(job_ids: Sequence[str]) -> None:
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        for job_id in job_ids:
            keys = [key async for key in client.scan_iter(match=f"eco2:*{job_id}*")]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


def runner_env(standin_url: str) -> dict[str, str]:
    """What the local runner gives every function process (eco2_tools.local.runner), on the benchmark's Redis DB."""
    return {
        "REDIS_URL": REDIS_URL,
        "K_SINK": "http://127.0.0.1:9",  # nothing is sent on: stages answer the next event, the gateway is not called
        "ECO2_ENV": "development",
        "OPENAI_BASE_URL": f"{standin_url}/v1",
        "ECO2_IMAGE_URL_ALLOWLIST": standin_url,
        "ECO2_IMAGE_URL_TRUSTED": standin_url,
    }


async def start_standin(children: Children, http: httpx.AsyncClient) -> str:
    """The stand-in model for vision and answer, latencies scaled to 1 % as in tests/conftest.py."""
    port = free_port()
    url = f"http://{HOST}:{port}"
    standin = children.spawn(
        [sys.executable, "-m", "eco2_tools.cli", "model-standin", "--port", str(port)],
        env={**os.environ, "STANDIN_LATENCY_SCALE": "0.01"},
        log_name="model-standin",
    )
    async with asyncio.timeout(START_TIMEOUT):
        await first_2xx(standin, lambda: http.get(f"{url}/healthz"))
    return url


async def function_benchmark(
    console: Console, children: Children, runs_per_function: int, out: dict[str, Any], only: Sequence[str] = ()
) -> None:
    """1 unmeasured start per function (fills the page cache), then `runs_per_function` measured ones each."""
    services = {n: s for n, s in sorted(Manifests.load(ROOT).services.items()) if not only or n in only}
    out["commands"] = {name: list(service.command) for name, service in services.items()}
    runs: list[ColdStart] = []
    out["runs"] = runs
    http = httpx.AsyncClient(timeout=START_TIMEOUT)
    rig: Rig | None = None
    try:
        standin_url = await start_standin(children, http)
        rig = Rig(children, http, services, runner_env(standin_url), standin_url)
        for function in services:
            console.print(f"  {function}: `{' '.join(services[function].command)}`, 1 + {runs_per_function} starts …")
            await rig.cold_start(function, "unmeasured")
            runs.extend([await rig.cold_start(function, str(index)) for index in range(runs_per_function)])
        console.print("  every function idle at once …")
        out["all_at_once"] = await rig.all_at_once()
        out["rows"] = [row for function in services for row in function_rows(function, runs)]
    finally:
        await http.aclose()
        if rig is not None:
            with contextlib.suppress(Exception):
                await forget_jobs(rig.job_ids)


def report(console: Console, out: dict[str, Any]) -> None:
    if not out.get("rows"):
        return
    title = "Function processes as their manifests start them: times in s, memory in MB (10^6 B), idle after one event"
    console.print(rows_table(title, out["rows"]))
    together = out.get("all_at_once")
    if together:
        sums = ", ".join(
            f"Σ {label} {together[key]:.1f} MB" for label, key in (("RSS", "VmRSS"), ("PSS", "Pss"), ("USS", "USS"))
        )
        console.print(f"all {len(out['commands'])} functions idle at once: {sums}")


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    harness.cancel_on_sigterm()
    with harness.workspace("eco2-fnbench-", 4096) as children:
        async with asyncio.timeout(BUDGET_SECONDS):
            results["functions"] = {}
            await function_benchmark(console, children, args.runs, results["functions"], args.only)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("functions", __doc__)
    parser.add_argument("--runs", type=int, default=3, help="measured starts per function (default 3)")
    parser.add_argument("--only", nargs="*", default=[], help="these functions only (default: every Service)")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 10:
        parser.error("--runs must be between 1 and 10 (the run must stay under 3 minutes)")
    console = harness.wide_console(150)
    machine = harness.machine_info()
    harness.print_header(console, "Eco² function processes: cold start and idle memory", machine)
    config = {"runs": args.runs, "targets": {"first_event_s": TARGET_FIRST_EVENT, "stage_uss_mb": TARGET_STAGE_USS_MB}}
    results = harness.new_results("eco2 functions", machine, config)
    code = harness.run_budgeted(run(args, console, results), results, BUDGET_SECONDS)
    report(console, results.get("functions", {}))
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
