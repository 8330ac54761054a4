"""Benchmark of the local runtime: dispatch overhead per hop, cold start and idle memory of a function process.

    .venv/bin/python -m tests.benchmarks.hop [--events N] [--out results/hop.json]

Redis for the function processes' job keys: $ECO2_BENCH_REDIS_URL (default redis://127.0.0.1:6379/9).

1. Hop. The runner's real TriggerConsumer (eco2.local.dispatcher) on a throwaway topology, declared by
   eco2.local.topology from the manifests in tests/benchmarks/fixtures (one Trigger `bench` on
   `type: eco2.bench.ping`, parallelism 10, retry 0) under a unique prefix `bench-<uuid>`, over the real
   RabbitMQ. Its `endpoints` callable returns the URL of a sink HTTP server in a separate process (uvicorn +
   Starlette), which records time.time() as each delivery reaches its handler. Events are published with
   eco2.local.messages.to_message (which stamps x-eco2-published-at) through a publisher-confirm channel;
   hop = sink received - stamp. Closed loop: an event is published when a permit is free, and a delivery
   gives its permit back when it finishes (the Endpoint's release). With 1 permit that is pure latency; with
   10 (the Trigger's parallelism) it is the latency of a saturated dispatcher. The same through the ingress
   (eco2.local.ingress.create_ingress served in this process, as the runner serves it; the HTTP client in a
   thread of its own): POST → 202 → sink. Then the 1-in-flight hop once more over the other queue type.
2. Cold start, two ways side by side (alternating, one unmeasured start of each first): forked from the
   runner's template process (eco2.local.processes.Template, the runner's default), and the exact command
   the runner runs for a Service's `eco2 serve <fn>` without a template (a fresh interpreter); both with the
   environment the runner gives them. /healthz and a real event are polled concurrently, so one spawn gives
   spawn → healthy and spawn → first event answered.
3. Idle memory of each of those processes, shortly after it answered: RSS (VmRSS from /proc/<pid>/status),
   PSS and USS (Private_Clean + Private_Dirty) from /proc/<pid>/smaps_rollup; and the template's at that moment.

Everything it starts (processes, queues, exchanges, Redis job keys) is removed at the end, also on Ctrl-C,
SIGTERM or an error; children also get SIGTERM should this process die (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import redis.asyncio as aioredis
import uvicorn
import yaml
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eco2.events import Classification, EventType, ScanClassified, ScanRequested, new_event
from eco2.local.dispatcher import Endpoint, TriggerConsumer
from eco2.local.ingress import create_ingress
from eco2.local.messages import PUBLISHED_AT_HEADER, to_message
from eco2.local.metrics import RunnerMetrics
from eco2.local.processes import Template
from eco2.local.replicas import free_port, local_command
from eco2.local.topology import Topology
from eco2.manifests import MANIFEST_DIRS, Manifests
from tests.benchmarks.processes import Children
from tests.benchmarks.report import HistogramState, Row, fmt, histogram_row, histogram_state, rows_table, sample_row

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("ECO2_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
HOST = "127.0.0.1"

TRIGGER = "bench"
WARMUP = 100
SATURATED_IN_FLIGHT = 10
COLD_START_RUNS = {"rules": 5, "vision": 5}  # per mode
TOGETHER_RUNS = 2
IDLE_BEFORE_RSS = 0.5
POLL_INTERVAL = 0.005

TARGET_HOP_P50 = 0.003
TARGET_COLD_START = 0.5
TARGET_RSS_MB = 60.0  # MB = 10**6 bytes, the stricter reading of "60 MB"
HOP_HISTOGRAM_NOTE = "runner's histogram: published → dispatcher got it"

BUDGET_SECONDS = 170.0  # the whole run before teardown; the run must stay under 3 minutes
DELIVERY_STALL_SECONDS = 10.0  # no delivery finishing for this long means the run is broken
COLD_START_TIMEOUT = 30.0


class BenchError(RuntimeError):
    """The benchmark could not measure something; the message says what."""


# --- child processes ---------------------------------------------------------------------------------------


def child_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {**base, "HOST": HOST, **extra}
    env.pop("PORT", None)
    return env


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def runner_like_env() -> dict[str, str]:
    """What the runner gives its function processes (eco2.local.replicas): bytecode writes allowed."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


async def wait_healthy(http: httpx.AsyncClient, url: str, process: subprocess.Popen[bytes]) -> None:
    """Poll GET /healthz until 200, failing if the process exits or the deadline passes."""
    deadline = time.monotonic() + COLD_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{url} exited with {process.returncode} while starting")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(f"{url}/healthz", timeout=1)).status_code == 200:
                return
        await asyncio.sleep(POLL_INTERVAL)
    raise BenchError(f"{url} was not healthy after {COLD_START_TIMEOUT:.0f}s")


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return float(int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rabbitmq_pid() -> int | None:
    """The RabbitMQ node's Erlang VM on this machine, if it runs here (only read, for its CPU time)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() == "beam.smp" and b"rabbit" in (proc / "cmdline").read_bytes():
                return int(proc.name)
    return None


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


# --- statistics --------------------------------------------------------------------------------------------


def hop_histogram(metrics: RunnerMetrics) -> HistogramState:
    return histogram_state(metrics.registry.collect(), "eco2_runner_hop_seconds", ("trigger", TRIGGER))


def delivery_outcomes(metrics: RunnerMetrics) -> dict[str, float]:
    outcomes: dict[str, float] = {}
    for family in metrics.registry.collect():
        if family.name == "eco2_runner_deliveries":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    outcomes[sample.labels["outcome"]] = outcomes.get(sample.labels["outcome"], 0) + sample.value
    return outcomes


# --- 1. dispatch hop ---------------------------------------------------------------------------------------


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside this process; the benchmark owns SIGINT/SIGTERM (as in the runner)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def manifest_root(tmp: Path, queue_type: str) -> Path:
    """The fixture manifests copied into `tmp`, with the broker config's queueType set to `queue_type`."""
    root = tmp / f"manifests-{queue_type}"
    for directory in MANIFEST_DIRS:
        shutil.copytree(FIXTURES / directory, root / directory)
    config = root / "eventing" / "broker-config.yaml"
    body = yaml.safe_load(config.read_text())
    body["spec"]["queueType"] = queue_type
    config.write_text(yaml.safe_dump(body))
    return root


def ping(run: str, seq: int) -> CloudEvent:
    attributes = {
        "specversion": "1.0",
        "type": "eco2.bench.ping",
        "source": "/eco2/bench",
        "id": f"{run}-{seq}",
        "datacontenttype": "application/json",
    }
    return CloudEvent(attributes, {"run": run, "seq": seq})


class Gate:
    """The closed loop: permits for events in flight; a finished delivery (Endpoint.release) returns one.

    Also notes when the dispatcher asked for the endpoint (in deliver(), right before the HTTP POST): with one
    event in flight those times line up with the events in order, which splits the hop in two.
    """

    def __init__(self) -> None:
        self._semaphore = asyncio.Semaphore(0)
        self._permits = 0
        self.dispatched: list[float] = []

    def release(self) -> None:
        self._semaphore.release()

    async def acquire(self) -> None:
        try:
            async with asyncio.timeout(DELIVERY_STALL_SECONDS):
                await self._semaphore.acquire()
        except TimeoutError:
            raise BenchError(f"no delivery finished in {DELIVERY_STALL_SECONDS:.0f}s: the dispatch stalled") from None

    def open(self, in_flight: int) -> None:
        self.dispatched = []
        for _ in range(in_flight):
            self._semaphore.release()
        self._permits = in_flight

    async def drain(self) -> None:
        """Wait for every outstanding delivery; the gate is shut afterwards."""
        for _ in range(self._permits):
            await self.acquire()
        self._permits = 0


@dataclass
class RunTimes:
    sent: dict[str, float] = field(default_factory=dict)  # event id -> published-at stamp, or POST start
    accepted: list[float] = field(default_factory=list)  # broker: stamp -> confirm; ingress: POST -> 202
    dispatched: list[float] = field(default_factory=list)  # the dispatcher's endpoint requests, in order
    wall: float = 0.0
    client_cpu: float = 0.0  # the ingress client thread's CPU time


async def publish_run(exchange: AbstractExchange, gate: Gate, run: str, count: int, in_flight: int) -> RunTimes:
    """Publish `count` pings, each as soon as a permit is free; confirms are awaited concurrently, so with
    `in_flight` 10 there are 10 events between publish and delivered."""
    times = RunTimes()
    confirms: set[asyncio.Task[None]] = set()

    async def publish(event_id: str, message: aio_pika.Message) -> None:
        await exchange.publish(message, routing_key="")
        times.accepted.append(time.time() - times.sent[event_id])

    gate.open(in_flight)
    started = time.perf_counter()
    try:
        for seq in range(count):
            await gate.acquire()
            message = to_message(ping(run, seq))
            assert message.headers is not None
            event_id = f"{run}-{seq}"
            times.sent[event_id] = float(str(message.headers[PUBLISHED_AT_HEADER]))
            task = asyncio.create_task(publish(event_id, message))
            confirms.add(task)
            task.add_done_callback(confirms.discard)
        await gate.drain()
        await asyncio.gather(*confirms)
    finally:
        for task in confirms:
            task.cancel()
    times.wall = time.perf_counter() - started
    times.dispatched = gate.dispatched
    return times


async def ingress_run(ingress_url: str, gate: Gate, run: str, count: int) -> RunTimes:
    """POST each ping from a client thread of its own, so the client does not run on the runner's loop."""
    times = RunTimes()
    loop = asyncio.get_running_loop()
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingress-client") as pool,
        httpx.Client(timeout=DELIVERY_STALL_SECONDS) as client,
    ):

        def post(headers: dict[str, str], body: bytes) -> tuple[float, float, int, float]:
            cpu = time.thread_time()
            sent = time.time()
            status = client.post(f"{ingress_url}/", headers=headers, content=body).status_code
            return sent, time.time(), status, time.thread_time() - cpu

        gate.open(1)
        started = time.perf_counter()
        for seq in range(count):
            await gate.acquire()
            headers, body = to_binary(ping(run, seq))
            sent, accepted, status, cpu = await loop.run_in_executor(pool, post, dict(headers), body)
            if status != 202:
                raise BenchError(f"the ingress answered {status}, not 202")
            times.sent[f"{run}-{seq}"] = sent
            times.accepted.append(accepted - sent)
            times.client_cpu += cpu
        await gate.drain()
        times.wall = time.perf_counter() - started
    times.dispatched = gate.dispatched
    return times


@dataclass
class HopRun:
    key: str
    label: str
    times: RunTimes
    histogram: HistogramState
    cpu: dict[str, float | None]  # CPU seconds per event by process (None: not readable)


class HopRig:
    """One throwaway topology under its own prefix, the runner's TriggerConsumer on it, an ingress in front."""

    def __init__(
        self, connection: AbstractRobustConnection, tmp: Path, queue_type: str, sink_url: str, sink_pid: int
    ) -> None:
        self.connection = connection
        self.queue_type = queue_type
        self.topology = Topology.plan(Manifests.load(manifest_root(tmp, queue_type)), f"bench-{uuid.uuid4().hex[:12]}")
        self.plan = self.topology.triggers[TRIGGER]
        self.sink_url = sink_url
        self.sink_pid = sink_pid
        self.metrics = RunnerMetrics()
        # The runner's own client settings (LocalPack._http).
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        self.gate = Gate()
        self.exchange: AbstractExchange | None = None
        self.ingress_url = ""
        self._consumer: TriggerConsumer | None = None
        self._ingress: _EmbeddedServer | None = None
        self._ingress_task: asyncio.Task[None] | None = None

    async def _endpoints(self, service: str) -> Endpoint:
        self.gate.dispatched.append(time.time())
        if service != self.plan.trigger.subscriber_service:
            raise LookupError(service)
        return Endpoint(self.sink_url, self.gate.release)

    async def start(self) -> None:
        # As LocalPack.start: declare, one confirm channel shared by the ingress and the dispatcher's replies.
        exchange = await self.topology.declare(await self.connection.channel(), None)
        publisher = await self.connection.channel(publisher_confirms=True)
        self.exchange = await publisher.get_exchange(exchange.name)
        self._consumer = TriggerConsumer(
            self.plan,
            channel=await self.connection.channel(),
            publisher=publisher,
            broker_exchange=self.exchange,
            endpoints=self._endpoints,
            http=self.http,
            metrics=self.metrics,
        )
        await self._consumer.start()
        port = free_port()
        self.ingress_url = f"http://{HOST}:{port}"
        config = uvicorn.Config(
            create_ingress(self.exchange, self.metrics),
            host=HOST,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._ingress = _EmbeddedServer(config)
        self._ingress_task = asyncio.create_task(self._ingress.serve())
        while not self._ingress.started:
            if self._ingress_task.done():
                raise BenchError(f"the ingress could not listen on {self.ingress_url}")
            await asyncio.sleep(0.01)

    def plan_for(self, key: str) -> tuple[str, Callable[[str, int], Awaitable[RunTimes]]]:
        """A run's label and how to run it: broker1, broker10 (saturated) or ingress1."""
        exchange = self.exchange
        assert exchange is not None
        if key == "broker1":
            return "1 in flight", lambda run, n: publish_run(exchange, self.gate, run, n, 1)
        if key == "broker10":
            return (
                f"{SATURATED_IN_FLIGHT} in flight",
                lambda run, n: publish_run(exchange, self.gate, run, n, SATURATED_IN_FLIGHT),
            )
        return "1 in flight", lambda run, n: ingress_run(self.ingress_url, self.gate, run, n)

    async def measure(self, key: str, label: str, go: Callable[[str, int], Awaitable[RunTimes]], n: int) -> HopRun:
        await go(f"{self.topology.prefix}-{key}-warmup", WARMUP)
        before = hop_histogram(self.metrics)
        rabbit = rabbitmq_pid()
        before_cpu = (time.process_time(), cpu_seconds(self.sink_pid), cpu_seconds(rabbit))
        times = await go(f"{self.topology.prefix}-{key}", n)
        after_cpu = (time.process_time(), cpu_seconds(self.sink_pid), cpu_seconds(rabbit))

        def per_event(index: int, minus: float = 0.0) -> float | None:
            start, end = before_cpu[index], after_cpu[index]
            return None if start is None or end is None else (end - start - minus) / n

        cpu = {
            "runner (dispatcher + ingress/publisher)": per_event(0, times.client_cpu),
            "sink": per_event(1),
            "rabbitmq": per_event(2),
        }
        return HopRun(key, label, times, hop_histogram(self.metrics).minus(before), cpu)

    async def stop(self) -> list[str]:
        """Stop consuming and serving, then delete the queues and exchanges; returns what could not be deleted."""
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop(grace_seconds=5)
        if self._ingress is not None and self._ingress_task is not None:
            self._ingress.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ingress_task, timeout=5)
        await self.http.aclose()
        failed: list[str] = []
        queues = [q for p in self.topology.triggers.values() for q in (p.queue, p.dead_letter_queue) if q]
        for name in queues:
            try:
                channel = await self.connection.channel()
                queue = await channel.get_queue(name, ensure=False)
                await queue.delete(if_unused=False, if_empty=False)
                await channel.close()
            except Exception as exc:
                failed.append(f"queue {name}: {type(exc).__name__}: {exc}")
        exchanges = [self.topology.exchange, *(p.dead_letter_exchange for p in self.topology.triggers.values())]
        for name in filter(None, exchanges):
            try:
                channel = await self.connection.channel()
                exchange = await channel.get_exchange(name, ensure=False)
                await exchange.delete(if_unused=False)
                await channel.close()
            except Exception as exc:
                failed.append(f"exchange {name}: {type(exc).__name__}: {exc}")
        return failed


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
    console: Console, children: Children, tmp: Path, events: int, queue_type: str, out: dict[str, Any]
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
        env=child_env(runner_like_env()),
        log_name="sink",
    )
    client = httpx.AsyncClient()
    connection: AbstractRobustConnection | None = None
    try:
        await wait_healthy(client, sink_url, sink)
        connection = await aio_pika.connect_robust(AMQP_URL)
        out["rabbitmq"] = server_version(connection)
        out["rabbitmq_pid_found"] = rabbitmq_pid() is not None
        runs: list[tuple[HopRun, str, float | None]] = []
        for rig_type, keys in ((queue_type, ("broker1", "broker10", "ingress1")), (comparison_type, ("broker1",))):
            rig = HopRig(connection, tmp, rig_type, sink_url, sink.pid)
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


# --- 2 and 3. cold start and idle RSS ----------------------------------------------------------------------


def classified_event(job_id: str) -> CloudEvent:
    data = ScanClassified(
        job_id=job_id,
        user_id="bench-user",
        image_url="http://127.0.0.1/bench.png",
        classification=Classification(major_category="재활용폐기물", middle_category="무색페트병"),
    )
    return new_event(EventType.SCAN_CLASSIFIED, data, source="/eco2/vision", job_id=job_id)


def requested_event(job_id: str, standin_url: str) -> CloudEvent:
    data = ScanRequested(job_id=job_id, user_id="bench-user", image_url=f"{standin_url}/samples/clear_pet_bottle.png")
    return new_event(EventType.SCAN_REQUESTED, data, source="/eco2/gateway", job_id=job_id)


REPLY_TYPES = {"rules": EventType.SCAN_RULED, "vision": EventType.SCAN_CLASSIFIED}


@dataclass
class ColdStart:
    function: str
    mode: str  # a key of MODES
    healthy: float  # spawn -> /healthz 200, seconds
    answered: float  # spawn -> first event answered 200
    memory_kb: dict[str, int]  # of the idle process: /proc/<pid>/status and smaps_rollup fields, and USS
    template_kb: dict[str, int] | None = None  # of the template at the same moment (fork mode)

    def mb(self, name: str) -> float:
        return self.memory_kb[name] * 1024 / 1e6


# How the runner starts a Service's `eco2 serve <name>`: a fork of its template process (the default), or
# the exact command as a fresh interpreter (ECO2_PREFORK=0, or no template).
MODES = {"fork": "forked from the template", "interpreter": "fresh interpreter"}
STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
SMAPS_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def proc_memory(pid: int) -> dict[str, int]:
    """kB: VmRSS and friends from /proc/<pid>/status, Pss and the shared/private split from smaps_rollup,
    and USS = Private_Clean + Private_Dirty (what the process alone holds: freed when it exits)."""
    fields: dict[str, int] = {}
    for path, wanted in ((f"/proc/{pid}/status", STATUS_FIELDS), (f"/proc/{pid}/smaps_rollup", SMAPS_FIELDS)):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name in wanted:
                fields[name] = int(value.split()[0])
    fields["USS"] = fields["Private_Clean"] + fields["Private_Dirty"]
    return fields


@dataclass
class Launched:
    """A function process started one way or the other; `status` is None while it runs."""

    pid: int
    status: Callable[[], int | None]
    stop: Callable[[], Awaitable[None]]


async def launch(
    mode: str, function: str, env: dict[str, str], log_name: str, children: Children, template: Template
) -> Launched:
    if mode == "fork":
        forked = await template.spawn(function, env=env, cwd=ROOT, log_path=children.log_dir / f"{log_name}.log")

        async def stop_forked() -> None:
            forked.terminate()
            try:
                await asyncio.wait_for(forked.wait(), 5)
            except TimeoutError:
                forked.kill()
                await forked.wait()

        return Launched(forked.pid, lambda: forked.returncode, stop_forked)
    # The exact command the runner runs for the manifest's `eco2 serve <function>` without a template.
    process = children.spawn(local_command(("eco2", "serve", function)), env=env, log_name=log_name)

    async def stop_process() -> None:
        children.stop(process)

    return Launched(process.pid, process.poll, stop_process)


async def first_answer(
    launched: Launched, attempt: Callable[[], Awaitable[httpx.Response]]
) -> tuple[float, httpx.Response]:
    """Retry `attempt` while the port refuses connections; when the first answer came, and the answer."""
    while True:
        if launched.status() is not None:
            raise BenchError(f"exited with {launched.status()} while starting")
        try:
            response = await attempt()
        except httpx.ConnectError:
            await asyncio.sleep(POLL_INTERVAL)
            continue
        if response.status_code != 200:
            raise BenchError(f"answered {response.status_code}: {response.text[:300]}")
        return time.perf_counter(), response


@dataclass
class FunctionRig:
    """Starts `rules` and `vision` either way, each answering one real event, and measures them."""

    children: Children
    template: Template
    http: httpx.AsyncClient
    env: dict[str, str]
    standin_url: str
    job_ids: list[str] = field(default_factory=list)

    def event(self, function: str) -> CloudEvent:
        job_id = f"bench-{uuid.uuid4().hex}"
        self.job_ids.append(job_id)
        return classified_event(job_id) if function == "rules" else requested_event(job_id, self.standin_url)

    async def start(self, function: str, mode: str, tag: str) -> tuple[Launched, float, float]:
        """The process, spawn → /healthz 200 and spawn → first event answered (polled concurrently)."""
        port = free_port()
        url = f"http://{HOST}:{port}"
        headers, body = to_binary(self.event(function))
        log_name = f"{function}-{mode}-{tag}"
        env = {**self.env, "PORT": str(port), "HOST": HOST}
        spawned = time.perf_counter()
        launched = await launch(mode, function, env, log_name, self.children, self.template)
        try:
            async with asyncio.timeout(COLD_START_TIMEOUT):
                (healthy_at, _), (answered_at, response) = await asyncio.gather(
                    first_answer(launched, lambda: self.http.get(f"{url}/healthz")),
                    first_answer(launched, lambda: self.http.post(f"{url}/", headers=dict(headers), content=body)),
                )
            if response.headers.get("ce-type") != REPLY_TYPES[function]:
                raise BenchError(f"answered 200 with ce-type {response.headers.get('ce-type')!r}")
        except (BenchError, TimeoutError) as exc:
            await launched.stop()
            reason = str(exc) or f"no answer in {COLD_START_TIMEOUT:.0f}s"
            raise BenchError(f"{function} ({mode}, {tag}): {reason}\n{self.children.log_tail(log_name)}") from None
        return launched, healthy_at - spawned, answered_at - spawned

    def template_memory(self, mode: str) -> dict[str, int] | None:
        return proc_memory(self.template.pid) if mode == "fork" and self.template.pid is not None else None

    async def cold_start(self, function: str, mode: str, tag: str) -> ColdStart:
        launched, healthy, answered = await self.start(function, mode, tag)
        try:
            await asyncio.sleep(IDLE_BEFORE_RSS)
            return ColdStart(function, mode, healthy, answered, proc_memory(launched.pid), self.template_memory(mode))
        finally:
            await launched.stop()

    async def together(self, mode: str, tag: str) -> dict[str, float]:
        """Σ RSS and Σ PSS (MB) of an idle `rules` and an idle `vision` alive at once, plus the template."""
        started: list[Launched] = []
        try:
            for function in COLD_START_RUNS:
                started.append((await self.start(function, mode, f"together-{tag}"))[0])
            await asyncio.sleep(IDLE_BEFORE_RSS)
            memories = [proc_memory(launched.pid) for launched in started]
            template = self.template_memory(mode)
            memories += [template] if template is not None else []
        finally:
            for launched in started:
                await launched.stop()
        return {name: sum(m[name] for m in memories) * 1024 / 1e6 for name in ("VmRSS", "Pss", "USS")}


def bytecode_state() -> str:
    import importlib.util

    spec = importlib.util.find_spec("openai")
    cached = spec is not None and spec.origin is not None and (Path(spec.origin).parent / "__pycache__").is_dir()
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return f"PYTHONPYCACHEPREFIX={os.environ['PYTHONPYCACHEPREFIX']}"
    if cached:
        return "bytecode cached in the venv"
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "PYTHONDONTWRITEBYTECODE=1 and no __pycache__ in the venv: every import compiled from source"
    return "no __pycache__ in the venv yet (the first start writes it)"


SHARED_NOTE = "¹ counts the pages it shares with the template"


def function_rows(function: str, runs: Sequence[ColdStart]) -> list[Row]:
    """Each measurement of one function with the two modes side by side, then the template's memory."""
    by_mode = {mode: [r for r in runs if r.function == function and r.mode == mode] for mode in MODES}
    measurements: list[tuple[str, Callable[[ColdStart], float], str, float | None]] = [
        ("spawn → /healthz 200", lambda r: r.healthy, "s", None),
        ("spawn → first event answered", lambda r: r.answered, "s", TARGET_COLD_START),
        ("idle RSS", lambda r: r.mb("VmRSS"), "MB", TARGET_RSS_MB),
        ("idle PSS (shared pages split among their sharers)", lambda r: r.mb("Pss"), "MB", None),
        ("idle USS (its private pages only)", lambda r: r.mb("USS"), "MB", None),
    ]
    rows: list[Row] = []
    for what, value, unit, target in measurements:
        for mode, mine in by_mode.items():
            note = SHARED_NOTE if mode == "fork" and what == "idle RSS" else ""
            name = f"{function}, {MODES[mode]}: {what}"
            rows.append(sample_row(name, [value(r) for r in mine], unit=unit, target=target, judged="p50", note=note))
    templates = [r.template_kb for r in by_mode["fork"] if r.template_kb is not None]
    for field_name, label in (("VmRSS", "RSS"), ("Pss", "PSS"), ("USS", "USS")):
        samples = [t[field_name] * 1024 / 1e6 for t in templates]
        rows.append(sample_row(f"  the template meanwhile: {label}", samples, unit="MB"))
    return rows


async def function_benchmark(console: Console, children: Children, tmp: Path, out: dict[str, Any]) -> None:
    rows: list[Row] = []
    out["rows"] = rows
    runs: list[ColdStart] = []
    out["runs"] = runs
    out["environment_as_is"] = bytecode_state()
    as_runner = runner_like_env()
    http = httpx.AsyncClient(timeout=COLD_START_TIMEOUT)
    standin: subprocess.Popen[bytes] | None = None
    # The runner's own template (eco2.local.processes), started as the runner starts it.
    template = Template(cwd=ROOT, env=as_runner, log_path=tmp / "logs" / "template.log")
    rig: FunctionRig | None = None
    try:
        # The stand-in model for vision, latencies scaled to 1 % as in tests/conftest.py.
        standin_port = free_port()
        standin_url = f"http://{HOST}:{standin_port}"
        standin = children.spawn(
            [sys.executable, "-m", "eco2.cli", "model-standin", "--port", str(standin_port)],
            env=child_env(as_runner, STANDIN_LATENCY_SCALE="0.01"),
            log_name="model-standin",
        )
        await template.start()
        await wait_healthy(http, standin_url, standin)
        out["template_preload_seconds"] = await template.wait_ready(COLD_START_TIMEOUT)
        env = child_env(as_runner, REDIS_URL=REDIS_URL, ECO2_JOB_TTL_SECONDS="600", ECO2_STAGE_TIMEOUT_SECONDS="20")
        env["OPENAI_BASE_URL"] = f"{standin_url}/v1"
        if not template.compatible(env):
            raise BenchError("the runner would not fork these processes (import-time variables differ)")
        rig = FunctionRig(children, template, http, env, standin_url)
        for function, count in COLD_START_RUNS.items():
            console.print(f"  {function}: 1 unmeasured + {count} starts per mode, modes alternating …")
            # The unmeasured first start of each mode fills the page cache (and the bytecode cache).
            for mode in MODES:
                await rig.cold_start(function, mode, "unmeasured")
            for index in range(count):
                for mode in MODES:  # alternating, so a change of the machine's load hits both modes alike
                    runs.append(await rig.cold_start(function, mode, str(index + 1)))
        console.print(f"  rules and vision idle at once: {TOGETHER_RUNS} times per mode …")
        together = {mode: [await rig.together(mode, str(i)) for i in range(TOGETHER_RUNS)] for mode in MODES}
        out["together"] = together
        for function in COLD_START_RUNS:
            rows.extend(function_rows(function, runs))
        rows.extend(together_rows(together))
    finally:
        await http.aclose()
        await template.stop()
        if standin is not None:
            children.stop(standin)
        if rig is not None:
            with contextlib.suppress(Exception):
                await forget_jobs(rig.job_ids)


def together_rows(together: dict[str, list[dict[str, float]]]) -> list[Row]:
    rows: list[Row] = []
    for label, key, note in (("Σ RSS", "VmRSS", "counts shared pages once per process"), ("Σ PSS", "Pss", "")):
        for mode, samples in together.items():
            what = "the two forks + the template" if mode == "fork" else "the two processes"
            name = f"rules + vision idle at once, {MODES[mode]}: {label} of {what}"
            rows.append(sample_row(name, [sample[key] for sample in samples], unit="MB", note=note))
    return rows


async def forget_jobs(job_ids: Sequence[str]) -> None:
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        for job_id in job_ids:
            keys = [key async for key in client.scan_iter(match=f"eco2:job:{job_id}*")]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


# --- report ------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    return {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_gb": round(mem_total / 1e9, 1),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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


def print_header(console: Console, machine: dict[str, Any]) -> None:
    console.rule("[bold]Eco² local runtime: hop, cold start, idle memory")
    console.print(
        f"machine   {machine['hostname']}: nproc {machine['nproc']} ({machine['cpu_model']}), "
        f"{machine['mem_total_gb']} GB RAM; load average {' '.join(map(str, machine['load_average_start']))} "
        "(a shared, noisy machine)"
    )
    console.print(f"python    {machine['python']} on {machine['platform']}")
    console.print(
        "setup     sink: a separate process (uvicorn + Starlette, h11; no uvloop/httptools installed); "
        "dispatcher, ingress and publisher on one asyncio loop in this process, as in the runner; "
        "ingress client in its own thread"
    )


def json_default(value: object) -> object:
    if isinstance(value, Row):
        return value.as_json()
    if isinstance(value, ColdStart):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# --- main --------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with tempfile.TemporaryDirectory(prefix="eco2-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "logs").mkdir()
        children = Children(tmp / "logs", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        try:
            async with asyncio.timeout(BUDGET_SECONDS):
                console.print(f"[bold]1/2[/] dispatch hop over RabbitMQ at {AMQP_URL.rpartition('@')[2]}")
                results["hop"] = {}
                await hop_benchmark(console, children, tmp, args.events, args.queue_type, results["hop"])
                if not args.skip_functions:
                    console.print("[bold]2/2[/] function processes: cold start and idle memory, forked and fresh")
                    results["functions"] = {}
                    await function_benchmark(console, children, tmp, results["functions"])
        finally:
            children.stop_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.hop", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="measured events per hop row (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("results/hop.json"), help="JSON results file")
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

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    machine = machine_info()
    print_header(console, machine)
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "eco2 hop",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
            "events": args.events,
            "warmup": WARMUP,
            "queue_type": args.queue_type,
            "saturated_in_flight": SATURATED_IN_FLIGHT,
            "cold_start_runs": COLD_START_RUNS,
            "sink": "separate process: uvicorn + Starlette (h11), time.time() on entering its handler",
            "targets": {"hop_p50_s": TARGET_HOP_P50, "cold_start_s": TARGET_COLD_START, "idle_rss_mb": TARGET_RSS_MB},
        },
    }
    code = 0
    try:
        asyncio.run(run(args, console, results))
    except KeyboardInterrupt:
        results["error"], code = "interrupted", 130
    except asyncio.CancelledError:
        results["error"], code = "terminated", 143
    except TimeoutError:
        results["error"], code = f"the run took longer than its budget of {BUDGET_SECONDS:.0f}s", 1
    except Exception as exc:
        results["error"], code = f"{type(exc).__name__}: {exc}", 1

    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    hop: dict[str, Any] = results.get("hop", {})
    functions: dict[str, Any] = results.get("functions", {})
    if hop.get("rows"):
        console.print(rows_table("Dispatch hop, ms", hop["rows"]))
        console.print(cpu_table(hop["rows"]))
    if functions.get("rows"):
        title = "Function processes: times in s, memory in MB (10^6 B) of the idle process after one event"
        console.print(rows_table(title, functions["rows"]))
        console.print(
            f"{SHARED_NOTE}: the same pages are in the template's RSS and in every fork's, so RSS cannot be "
            "summed over processes; PSS can (each shared page split among the processes mapping it), and USS is "
            "what one more process costs. Template preload: "
            f"{functions.get('template_preload_seconds', '—')} s, once per pack."
        )
        console.print(f"env as is: {functions['environment_as_is']}")
    if hop.get("deliveries"):
        console.print(f"deliveries by outcome: {hop['deliveries']}")
    if hop.get("cleanup_failures"):
        console.print(f"[bold red]RabbitMQ cleanup failed:[/] {hop['cleanup_failures']}")
    elif hop.get("rigs"):
        deleted = ", ".join(f"{r['queue']}" for r in hop["rigs"])
        console.print(f"RabbitMQ: deleted {deleted} and their exchanges")
    console.print(
        f"load average at the end {' '.join(map(str, machine['load_average_end']))}; "
        f"took {results['duration_seconds']} s"
    )
    if "error" in results:
        console.print(f"[bold red]error:[/] {results['error']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=json_default, ensure_ascii=False, allow_nan=False) + "\n")
    console.print(f"results written to {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
