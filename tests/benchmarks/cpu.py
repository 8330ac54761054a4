"""CPU per scan by process for the whole pack under `eco2 up`; the runner's CPU per event it moves; a stage's own cost.

    .venv/bin/python -m tests.benchmarks.cpu [--scans N] [--events N] [--baseline CHECKOUT] [--out results/cpu.json]

1. Pack. `eco2 up --detach` on its own Redis DB ($ECO2_BENCH_REDIS_URL, default redis://127.0.0.1:6379/9), ports
   and topology prefix, the stand-in model at zero latency (STANDIN_LATENCY_SCALE=0). A warm-up burst brings every
   stage up; then N scans are posted straight into the ingress (the job created in Redis first, as the gateway
   does), at most 20 POSTs in flight, and the run waits until every job is `done`. utime + stime of each process
   from /proc before and after the burst, divided by N: the runner (ingress + dispatchers), each function, the
   stand-in, RabbitMQ and Redis (both shared with whatever else runs on the machine: an upper bound). The runner's
   CPU per event it moves divides its CPU by the events it moved in the burst: ingress accepts + deliveries (its
   own counters, read from the ingress's /metrics). `eco2 down` at the end, also on error or Ctrl-C.
2. Stages (tests.benchmarks.cpu_stages): vision, rules, answer and reward started as their manifests start them
   (`eco2 serve NAME`), one CloudEvent at a time POSTed straight to the function over HTTP for a job that exists:
   the wall time p50 (the zero-latency model call included for vision and answer), the stand-in's own time per
   call subtracted, and the function process's CPU per event.

With --baseline CHECKOUT (e.g. `git archive main | tar -x -C /tmp/base`), both parts run twice in the same run:
first with that checkout's sources (PYTHONPATH and ECO2_ROOT point at it; same venv), then with this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from cloudevents.conversion import to_binary
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from eco2 import keys
from eco2.events import EventType, ScanRequested, new_event
from eco2.jobs import JobStore
from eco2_tools.bench import harness
from eco2_tools.bench.processes import ROOT, cpu_seconds, rabbitmq_pid
from tests.benchmarks import cpu_stages
from tests.support import EVENT_TOKEN, SENDER

REDIS_URL = os.environ.get("ECO2_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
HOST = "127.0.0.1"
PORT_BASE = int(os.environ.get("ECO2_BENCH_PORT_BASE", "18390"))
IN_FLIGHT = 20
BUDGET_SECONDS = 900.0
JOB_TIMEOUT = 120.0
TARGET_PACK_MS = 30.0
TARGET_RUNNER_MS = 2.0


@dataclass
class Checkout:
    """The sources a run uses: this checkout, or a baseline's (its shared/ first on PYTHONPATH, its functions/)."""

    label: str
    root: Path
    baseline: bool = False

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        if self.baseline:
            env["PYTHONPATH"] = os.pathsep.join([str(self.root / "shared"), str(self.root)])
            env["ECO2_ROOT"] = str(self.root)
        return env


@dataclass
class PackRun:
    label: str
    scans: int
    seconds: float
    cpu_ms_per_scan: dict[str, float]  # process group → ms of CPU per scan
    events_moved: float
    runner_ms_per_event: float | None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return self.__dict__


def pack_env(checkout: Checkout, state_dir: Path) -> dict[str, str]:
    return {
        **checkout.env(),
        "REDIS_URL": REDIS_URL,
        "ECO2_STATE_DIR": str(state_dir),
        "ECO2_TOPOLOGY_PREFIX": f"eco2-cpu-{uuid.uuid4().hex[:8]}",
        "ECO2_INGRESS_PORT": str(PORT_BASE + 1),
        "ECO2_GATEWAY_PORT": str(PORT_BASE + 2),
        "ECO2_STANDIN_PORT": str(PORT_BASE + 3),
        "ECO2_S3_PORT": str(PORT_BASE + 4),
        "STANDIN_LATENCY_SCALE": "0",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
        # The pack's sender credential, which the burst's posts into the ingress present (a checkout that
        # predates it ignores both).
        "ECO2_EVENT_TOKEN": EVENT_TOKEN,
    }


def eco2(*args: str, env: dict[str, str], log: Path) -> None:
    command = [str(Path(sys.executable).with_name("eco2")), *args]
    with log.open("ab") as out:
        cwd = env.get("ECO2_ROOT", str(ROOT))
        done = subprocess.run(command, env=env, cwd=cwd, stdout=out, stderr=out, timeout=120)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise harness.BenchError(f"`eco2 {' '.join(args)}` exited {done.returncode}:\n{tail}")


def _ppid_and_cmdline(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return int(stat[1]), cmdline


def pack_processes(state_dir: Path) -> dict[int, str]:
    """pid → the group it is counted in: the runner, each function by name, the stand-in, the S3 emulator."""
    state = json.loads((state_dir / "runner.json").read_text())
    runner = int(state["pid"])
    named = {
        int(replica["pid"]): name
        for name, function in state["functions"].items()
        for replica in function["replicas"]
        if replica.get("pid")
    }
    groups = {runner: "runner (ingress + dispatchers)"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        found = _ppid_and_cmdline(int(entry.name))
        if found is None or found[0] != runner:
            continue
        pid, cmdline = int(entry.name), found[1]
        groups[pid] = named.get(pid) or _helper_name(cmdline)
    return groups


def _helper_name(cmdline: str) -> str:
    if "model-standin" in cmdline:
        return "model stand-in"
    return "S3 emulator" if "emulators" in cmdline else "other: " + cmdline[-40:]


def redis_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "redis-server":
                return int(entry.name)
    return None


def cpu_snapshot(state_dir: Path) -> dict[int, tuple[str, float]]:
    groups = pack_processes(state_dir)
    for pid, name in ((rabbitmq_pid(), "RabbitMQ (whole node, shared)"), (redis_pid(), "Redis (shared)")):
        if pid is not None:
            groups[pid] = name
    return {pid: (name, cpu) for pid, name in groups.items() if (cpu := cpu_seconds(pid)) is not None}


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between the two snapshots, summed per group (a process started in between counts whole)."""
    spent: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        spent[name] = spent.get(name, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
    return spent


async def events_moved(http: httpx.AsyncClient, ingress: str) -> float:
    """Ingress accepts + deliveries (every outcome), from the runner's own counters."""
    text = (await http.get(f"{ingress}/metrics")).text
    moved = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            accepted = sample.name == "eco2_runner_ingress_total" and sample.labels.get("outcome") == "accepted"
            if accepted or sample.name == "eco2_runner_deliveries_total":
                moved += sample.value
    return moved


async def burst(http: httpx.AsyncClient, store: JobStore, ingress: str, scans: int, standin: str) -> list[str]:
    """Post `scans` scans into the ingress, IN_FLIGHT at a time; wait until every job is done. Errors, if any."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    job_ids = [f"cpu-{uuid.uuid4().hex}" for _ in range(scans)]

    async def post(job_id: str) -> None:
        async with gate:
            await store.create(job_id, "bench-user")
            data = ScanRequested(job_id=job_id, user_id="bench-user", image_url=f"{standin}/samples/glass_bottle.png")
            headers, body = to_binary(new_event(EventType.SCAN_REQUESTED, data, source="/eco2/bench", job_id=job_id))
            response = await http.post(f"{ingress}/", headers=dict(headers) | SENDER, content=body)
            if response.status_code != 202:
                raise harness.BenchError(f"the ingress answered {response.status_code}: {response.text[:200]}")

    await asyncio.gather(*(post(job_id) for job_id in job_ids))
    waiting, deadline = set(job_ids), time.monotonic() + JOB_TIMEOUT
    while waiting and time.monotonic() < deadline:
        ordered = sorted(waiting)
        pipe = store.redis.pipeline(transaction=False)
        for job_id in ordered:
            pipe.hget(keys.job(job_id), "status")
        for job_id, status in zip(ordered, await pipe.execute(), strict=True):
            if status in ("done", "failed", "cancelled"):
                waiting.discard(job_id)
        await asyncio.sleep(0.05)
    return [f"{len(waiting)} of {scans} jobs not done in {JOB_TIMEOUT:.0f}s"] if waiting else []


async def measure_pack(checkout: Checkout, scans: int, console: Console) -> PackRun:
    with tempfile.TemporaryDirectory(prefix="eco2-cpu-") as tmp:
        state_dir = Path(tmp)
        env = pack_env(checkout, state_dir)
        log = state_dir / "bench.log"
        ingress, standin = f"http://{HOST}:{env['ECO2_INGRESS_PORT']}", f"http://{HOST}:{env['ECO2_STANDIN_PORT']}"
        store = JobStore.from_url(REDIS_URL, ttl_seconds=600)
        http = httpx.AsyncClient(timeout=30.0)
        try:
            console.print(f"  {checkout.label}: eco2 up --detach …")
            await asyncio.to_thread(eco2, "up", "--detach", env=env, log=log)
            console.print(f"  {checkout.label}: warm-up burst of {scans} scans …")
            await burst(http, store, ingress, scans, standin)
            await asyncio.sleep(1.0)  # the last replies acked, the processes idle
            console.print(f"  {checkout.label}: measured burst of {scans} scans …")
            before, moved_before, started = cpu_snapshot(state_dir), await events_moved(http, ingress), time.monotonic()
            errors = await burst(http, store, ingress, scans, standin)
            seconds = time.monotonic() - started
            await asyncio.sleep(0.5)  # persist's last batch
            after, moved = cpu_snapshot(state_dir), await events_moved(http, ingress) - moved_before
        finally:
            await http.aclose()
            with contextlib.suppress(Exception):
                await forget_jobs(store)
            await store.aclose()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(eco2, "down", env=env, log=log)
            with contextlib.suppress(Exception):
                await delete_topology(env["ECO2_TOPOLOGY_PREFIX"])
    spent = cpu_by_group(before, after)
    runner = spent.get("runner (ingress + dispatchers)")
    return PackRun(
        checkout.label,
        scans,
        seconds,
        {name: cpu / scans * 1000 for name, cpu in sorted(spent.items())},
        moved,
        runner / moved * 1000 if runner is not None and moved else None,
        errors,
    )


async def delete_topology(prefix: str) -> None:
    """Delete the throwaway queues and exchanges `eco2 up` declared under `prefix` (eco2_tools.local.topology)."""
    from eco2_tools.local import topology
    from eco2_tools.manifests import Manifests

    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=10)
    try:
        await topology.delete_topology(await connection.channel(), Manifests.load(ROOT), prefix)
    finally:
        await connection.close()


async def forget_jobs(store: JobStore) -> None:
    keys = [key async for key in store.redis.scan_iter(match="eco2:*cpu-*")]
    for start in range(0, len(keys), 500):
        await store.redis.delete(*keys[start : start + 500])


def pack_table(runs: Sequence[PackRun]) -> Table:
    table = Table(title="CPU per scan by process (ms of utime+stime per scan)", title_justify="left")
    table.add_column("process")
    for run in runs:
        table.add_column(run.label, justify="right")
    groups = sorted({name for run in runs for name in run.cpu_ms_per_scan})
    for name in groups:
        table.add_row(name, *(f"{run.cpu_ms_per_scan.get(name, 0.0):.2f}" for run in runs))
    pack = [sum(v for k, v in run.cpu_ms_per_scan.items() if not k.startswith(("RabbitMQ", "Redis"))) for run in runs]
    table.add_row("[bold]the pack's own processes", *(f"[bold]{v:.2f}" for v in pack))
    table.add_row("[bold]with RabbitMQ + Redis", *(f"[bold]{sum(run.cpu_ms_per_scan.values()):.2f}" for run in runs))
    table.add_row(f"target (whole pack) ≤ {TARGET_PACK_MS:.0f}", *("" for _ in runs))
    table.add_row("events the runner moved per scan", *(f"{run.events_moved / run.scans:.1f}" for run in runs))
    table.add_row(
        f"[bold]runner CPU per event moved (target ≤ {TARGET_RUNNER_MS:.0f})",
        *("—" if run.runner_ms_per_event is None else f"[bold]{run.runner_ms_per_event:.2f}" for run in runs),
    )
    table.add_row("scans/s in the measured burst", *(f"{run.scans / run.seconds:.1f}" for run in runs))
    return table


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    harness.cancel_on_sigterm()
    checkouts = [Checkout("this checkout", ROOT)]
    if args.baseline is not None:
        checkouts.insert(0, Checkout(f"baseline ({args.baseline.name})", args.baseline.resolve(), baseline=True))
    async with asyncio.timeout(BUDGET_SECONDS):
        if not args.skip_pack:
            console.print("Part 1: the whole pack under `eco2 up`")
            results["pack"] = [await measure_pack(checkout, args.scans, console) for checkout in checkouts]
            console.print(pack_table(results["pack"]))
        if not args.skip_stages:
            console.print("Part 2: each stage straight over HTTP, as its manifest starts it")
            results["stages"] = await cpu_stages.measure(checkouts, args.events, console)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("cpu", __doc__)
    parser.add_argument("--scans", type=int, default=200, help="scans in the measured burst (default 200)")
    parser.add_argument("--events", type=int, default=300, help="events per stage in part 2 (default 300)")
    parser.add_argument("--baseline", type=Path, help="another checkout measured first, side by side")
    parser.add_argument("--skip-pack", action="store_true", help="part 2 only")
    parser.add_argument("--skip-stages", action="store_true", help="part 1 only")
    args = parser.parse_args(argv)
    console = harness.wide_console(150)
    machine = harness.machine_info()
    harness.print_header(console, "Eco² CPU per scan, per process; a stage's own cost", machine)
    config = {k: str(v) for k, v in vars(args).items()} | {"standin_latency_scale": 0, "in_flight": IN_FLIGHT}
    results = harness.new_results("eco2 cpu", machine, config)
    code = harness.run_budgeted(run(args, console, results), results, BUDGET_SECONDS)
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
