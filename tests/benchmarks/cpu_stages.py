"""Part 2 of tests.benchmarks.cpu: a stage's own cost, one CloudEvent at a time straight to the function over HTTP.

Each stage is started as its manifest starts it (tests.benchmarks.functions.Rig: `eco2 serve NAME`, the
manifest's env, what the runner gives a function), with the stand-in model at zero latency. Every event is for a
job created in Redis beforehand (as the gateway does), so the stage does all its Redis work. Per stage: the wall
time of the POST (p50, p99), the function process's CPU per event, the stand-in's CPU per event (vision and
answer call it once per event), and the stage's own cost: the wall time less the stand-in's time per call.
With a baseline, both checkouts' functions run at once (each with its own stand-in) and take the events in turn,
one each, first one then the other, so a change in the shared machine's load falls on both alike.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from cloudevents.conversion import to_binary
from rich.console import Console

from eco2.jobs import JobStore
from eco2_tools.bench.harness import workspace
from eco2_tools.bench.processes import ROOT, Children, cpu_seconds
from eco2_tools.bench.report import Row, rows_table, sample_row
from eco2_tools.local.replicas import free_port
from eco2_tools.manifests import Manifests
from tests.benchmarks.functions import HOST, REDIS_URL, START_TIMEOUT, Rig, event_for, first_2xx, runner_env

if TYPE_CHECKING:
    from tests.benchmarks.cpu import Checkout

STAGES = ("vision", "rules", "answer", "reward")
WARMUP = 30
TARGET_OWN_P50 = 0.002


async def start_standin(children: Children, http: httpx.AsyncClient, env: dict[str, str]) -> tuple[str, int]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    standin = children.spawn(
        [sys.executable, "-m", "eco2_tools.cli", "model-standin", "--port", str(port)],
        env={**env, "STANDIN_LATENCY_SCALE": "0"},
        log_name="model-standin",
    )
    async with asyncio.timeout(START_TIMEOUT):
        await first_2xx(standin, lambda: http.get(f"{url}/healthz"))
    return url, standin.pid


async def prepared_posts(rig: Rig, store: JobStore, stage: str, count: int) -> list[tuple[dict[str, str], bytes]]:
    """`count` events for the stage (headers and body), each for a job created beforehand, as the gateway does."""
    posts = []
    for _ in range(count):
        job_id = f"cpu-{uuid.uuid4().hex}"
        rig.job_ids.append(job_id)
        await store.create(job_id, "bench-user")
        event = event_for(stage, job_id, rig.standin_url)
        assert event is not None
        headers, body = to_binary(event)
        posts.append((dict(headers), body))
    return posts


@dataclass
class Side:
    """One checkout's function and stand-in in a stage's run, and what it measured."""

    label: str
    rig: Rig
    standin_pid: int
    process: subprocess.Popen[bytes] | None = None
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    cpu: tuple[float, float] = (0.0, 0.0)  # the function's and the stand-in's CPU seconds when measuring began

    async def post(self, index: int) -> None:
        assert self.process is not None
        headers, body = self.posts[index]
        if index == WARMUP:
            self.cpu = (cpu_seconds(self.process.pid) or 0.0, cpu_seconds(self.standin_pid) or 0.0)
        started = time.perf_counter()
        response = await self.rig.http.post(f"{self.rig.urls[self.process.pid]}/", headers=headers, content=body)
        if index >= WARMUP:
            self.walls.append(time.perf_counter() - started)
        if not 200 <= response.status_code < 300:
            raise RuntimeError(f"{self.label} answered {response.status_code}: {response.text[:200]}")


async def stage_rows(sides: Sequence[Side], stage: str, events: int) -> list[Row]:
    store = JobStore.from_url(REDIS_URL, ttl_seconds=600)
    try:
        for side in sides:
            side.process, *_ = await side.rig.start(stage, side.label)
            side.posts, side.walls = await prepared_posts(side.rig, store, stage, WARMUP + events), []
        for index in range(WARMUP + events):
            for side in sides if index % 2 == 0 else reversed(sides):  # neither always goes first
                await side.post(index)
        return [row for side in sides for row in side_rows(side, stage, events)]
    finally:
        await store.aclose()
        for side in sides:
            if side.process is not None:
                side.rig.children.stop(side.process)


def side_rows(side: Side, stage: str, events: int) -> list[Row]:
    assert side.process is not None
    own_cpu = ((cpu_seconds(side.process.pid) or 0.0) - side.cpu[0]) / events
    model_cpu = ((cpu_seconds(side.standin_pid) or 0.0) - side.cpu[1]) / events if stage in ("vision", "answer") else 0
    label, walls = side.label, side.walls
    note = f"{label}: function CPU {own_cpu * 1000:.2f} ms/event, stand-in {model_cpu * 1000:.2f} ms/event"
    return [
        sample_row(f"{stage} ({label}): POST → answer", walls, note=note, extra={"function_cpu_s": own_cpu}),
        sample_row(
            f"  {stage} ({label}): own cost (less the stand-in's time)",
            [wall - model_cpu for wall in walls],
            target=TARGET_OWN_P50,
            judged="p50",
            extra={"function_cpu_s": own_cpu, "standin_cpu_s": model_cpu},
        ),
    ]


async def measure(checkouts: Sequence[Checkout], events: int, console: Console) -> dict[str, Any]:
    services = Manifests.load(ROOT).services
    rows: list[Row] = []
    with workspace("eco2-cpu-stages-", 4096) as children:
        async with httpx.AsyncClient(timeout=START_TIMEOUT) as http:
            sides = []
            for checkout in checkouts:
                extra = {k: v for k, v in checkout.env().items() if k in ("PYTHONPATH", "ECO2_ROOT")}
                standin_url, standin_pid = await start_standin(children, http, {**os.environ, **extra})
                rig = Rig(children, http, services, {**runner_env(standin_url), **extra}, standin_url)
                sides.append(Side(checkout.label, rig, standin_pid))
            for stage in STAGES:
                console.print(f"  {stage}: {WARMUP} + {events} events to each of {len(sides)} checkout(s) in turn …")
                rows += await stage_rows(sides, stage, events)
    console.print(rows_table("A stage's own cost: one event at a time, straight over HTTP (ms)", rows))
    return {"rows": rows}
