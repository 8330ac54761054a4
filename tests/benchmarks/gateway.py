"""Benchmark of the gateway: accept latency of POST /api/v1/scan, and SSE fan-out on one gateway process.

    .venv/bin/python -m tests.benchmarks.gateway [--sink ingress|stub] [--out results/gateway.json]

The gateway is the real one, started as the runner starts it (eco2.local.replicas: `python -m eco2.serving
gateway`, PORT/HOST in the environment, bytecode writes allowed), on Redis DB 13 (flushed at the start and the
end), with ECO2_ENV=production, a random 64-character ECO2_JWT_SECRET, the per-user rate limit raised out of the
way, LOG_LEVEL=INFO (as knative/config.yaml) and every other setting at its default; inherited ECO2_* variables
are dropped. image_url is https://images.eco2-bench.example/…, an origin allowlisted (ECO2_IMAGE_URL_ALLOWLIST)
and trusted (ECO2_IMAGE_URL_TRUSTED), as an operator configures its own upload CDN: this machine has no DNS, an
allowlisted origin is never resolved (eco2.gateway.ssrf) and a trusted one is never fetched (eco2.gateway.probe).

1. Accept. K_SINK is the real broker ingress (eco2.local.ingress.create_ingress, as `eco2 up` serves it) in a
   process of its own, over the real RabbitMQ, on a throwaway topology declared from the pack's manifests
   (eco2.local.topology) under the prefix `gwbench-<hex>`: each eco2.scan.requested lands in that topology's
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
Redis DB 13) is removed at the end, also on Ctrl-C, SIGTERM or an error; children also get SIGTERM should this
process die (PR_SET_PDEATHSIG). The soft RLIMIT_NOFILE is raised when too low for the streams, here and in the
children. The run stays under 3 minutes (a budget of 170 s before teardown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import random
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import httpx
import redis.asyncio as aioredis
import uvicorn
import uvloop
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eco2 import keys
from eco2.gateway.auth import issue_token
from eco2.gateway.context import POOL_CLIENT_NAME, READER_CLIENT_NAME
from eco2.gateway.settings import GatewaySettings
from eco2.gateway.sse_client import aparse
from eco2.jobs import JobStatus, JobStore, Stage
from eco2.local.ingress import create_ingress
from eco2.local.metrics import RunnerMetrics
from eco2.local.replicas import free_port, local_command
from eco2.local.topology import Topology
from eco2.manifests import Manifests
from tests.benchmarks.hop import (
    BenchError,
    cpu_seconds,
    machine_info,
    rabbitmq_pid,
    runner_like_env,
    wait_healthy,
)
from tests.benchmarks.processes import Children, raise_nofile
from tests.benchmarks.report import (
    HistogramState,
    Quantile,
    Row,
    fmt,
    histogram_row,
    histogram_state,
    percentile,
    rows_table,
    sample_row,
)

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_DB = 13
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
REDIS_PORT = 6379
LOCK_KEY = "eco2-bench:gateway:lock"  # in the benchmark's DB: one run at a time
HOST = "127.0.0.1"
IMAGE_ORIGIN = "https://images.eco2-bench.example"  # allowlisted, so never resolved (there is no DNS here)

BASELINE_CLIENTS = 1
BASELINE_SECONDS = 4.0
ACCEPT_LEVELS = (50, 200)
ACCEPT_WARMUP = 2.0
OPEN_LOOP_SHARE = 0.5  # the open-loop run offers this share of the best closed-loop throughput
OPEN_LOOP_USERS = 100  # users (connections) the open loop's arrivals take turns on
SSE_STEPS = (1, 100, 1000)
SSE_SETTLE = 0.5  # after a step's streams are open, before counting connections
SSE_COLLECT_TIMEOUT = 20.0
PIPELINE = (Stage.VISION, Stage.RULE, Stage.ANSWER, Stage.REWARD)
LIVE_EVENTS_PER_JOB = len(PIPELINE) + 1  # + done
RESULT = {"pipeline_result": {"final_answer": {"user_answer": "ok"}}, "reward": None, "reward_reason": "no_rule"}

TARGET_ACCEPT_P99 = 0.020
SEED_TARGET_ACCEPT_P99 = 0.100
TARGET_SSE_P99 = 0.050

BUDGET_SECONDS = 170.0  # the whole run before teardown; the run must stay under 3 minutes
REPLY_TIMEOUT = 60.0  # a client process must answer a command within this
TERMINAL = frozenset({"done", "failed", "cancelled"})
POOL_SIZE = GatewaySettings.redis_max_connections  # the gateway's default pool bound (not overridden here)


@dataclass
class Client:
    """A client process of this module (--accept-client / --sse-client): JSON lines in on stdin, out on stdout."""

    name: str
    process: subprocess.Popen[bytes]
    children: Children

    async def send(self, payload: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None

        def write() -> None:
            stdin.write(json.dumps(payload).encode() + b"\n")
            stdin.flush()

        try:
            await asyncio.to_thread(write)
        except (BrokenPipeError, OSError):
            raise BenchError(f"{self.name} is gone:\n{self.children.log_tail(self.name)}") from None

    async def receive(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), timeout)
        except TimeoutError:
            raise BenchError(f"{self.name} did not answer in {timeout:.0f}s") from None
        if not line:
            raise BenchError(f"{self.name} exited ({self.process.poll()}):\n{self.children.log_tail(self.name)}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise BenchError(f"{self.name}: {reply['error']}")
        return reply


def spawn_clients(children: Children, kind: str, count: int, tag: str) -> list[Client]:
    env = {k: v for k, v in runner_like_env().items() if not k.startswith("ECO2_")}
    clients = []
    for index in range(count):
        name = f"{kind}-client-{tag}-{index}"
        process = children.spawn(
            [sys.executable, "-m", "tests.benchmarks.gateway", f"--{kind}-client"], env=env, log_name=name, pipes=True
        )
        clients.append(Client(name, process, children))
    return clients


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible, the first ones taking the remainder."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def gateway_env(sink_url: str, secret: str, port: int) -> dict[str, str]:
    """What the runner gives a function process, with the benchmark's settings; inherited ECO2_* dropped."""
    drop = {"K_SINK", "REDIS_URL", "PORT", "HOST", "LOG_LEVEL"}
    env = {k: v for k, v in runner_like_env().items() if not k.startswith("ECO2_") and k not in drop}
    env.update(
        {
            "PORT": str(port),
            "HOST": HOST,
            "REDIS_URL": REDIS_URL,
            "K_SINK": sink_url,
            "ECO2_ENV": "production",
            "ECO2_JWT_SECRET": secret,
            "ECO2_IMAGE_URL_ALLOWLIST": IMAGE_ORIGIN,
            "ECO2_IMAGE_URL_TRUSTED": IMAGE_ORIGIN,
            "ECO2_RATE_LIMIT_BURST": "1000000000",
            "ECO2_RATE_LIMIT_PER_SECOND": "1000000000",
            "ECO2_JOB_TTL_SECONDS": "3600",
            "LOG_LEVEL": "INFO",
        }
    )
    return env


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_name: str


async def start_gateway(children: Children, http: httpx.AsyncClient, sink_url: str, secret: str, tag: str) -> Gateway:
    port = free_port()
    log_name = f"gateway-{tag}"
    # The exact command the runner runs for the manifest's `eco2 serve gateway`.
    command = local_command(("eco2", "serve", "gateway"))
    process = children.spawn(command, env=gateway_env(sink_url, secret, port), log_name=log_name)
    url = f"http://{HOST}:{port}"
    try:
        await wait_healthy(http, url, process)
    except BenchError as exc:
        raise BenchError(f"gateway: {exc}\n{children.log_tail(log_name)}") from None
    return Gateway(url, process, log_name)


# --- the sink: the broker ingress over RabbitMQ, or a stub -------------------------------------------------


def serve_ingress(port: int, prefix: str) -> None:
    """As LocalPack.start: declare the topology, one publisher-confirm channel, the ingress app on it."""

    async def main() -> None:
        topology = Topology.plan(Manifests.load(ROOT), prefix)
        connection = await aio_pika.connect_robust(AMQP_URL)
        try:
            exchange = await topology.declare(await connection.channel(), None)
            publisher = await connection.channel(publisher_confirms=True)
            broker_exchange = await publisher.get_exchange(exchange.name)
            config = uvicorn.Config(
                create_ingress(broker_exchange, RunnerMetrics()),
                host=HOST,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="off",
            )
            await uvicorn.Server(config).serve()
        finally:
            await connection.close()

    asyncio.run(main())


def serve_stub(port: int) -> None:
    """A sink that takes every event: reads the body, answers 202."""

    async def accept(request: Request) -> Response:
        await request.body()
        return Response(status_code=202)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/", accept, methods=["POST"]), Route("/healthz", health, methods=["GET"])])
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


@dataclass
class Sink:
    kind: str
    url: str
    process: subprocess.Popen[bytes]
    description: str
    topology: Topology | None = None


async def start_sink(children: Children, http: httpx.AsyncClient, kind: str) -> Sink:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in runner_like_env().items() if not k.startswith("ECO2_")}
    module = [sys.executable, "-m", "tests.benchmarks.gateway"]
    if kind == "ingress":
        prefix = f"gwbench-{uuid.uuid4().hex[:12]}"
        topology = Topology.plan(Manifests.load(ROOT), prefix)
        process = children.spawn([*module, "--serve-ingress", str(port), prefix], env=env, log_name="ingress")
        description = (
            f"the broker ingress (eco2.local.ingress.create_ingress) in its own process over RabbitMQ, "
            f"topology of the pack's manifests under the throwaway prefix {prefix} "
            f"({topology.queue_type} queues); 202 after the publisher confirm"
        )
        sink = Sink(kind, url, process, description, topology)
    else:
        process = children.spawn([*module, "--serve-stub", str(port)], env=env, log_name="stub-sink")
        sink = Sink(kind, url, process, "a stub: uvicorn + Starlette in its own process, answers 202 to everything")
    try:
        await wait_healthy(http, url, process)
    except BenchError as exc:
        raise BenchError(f"sink: {exc}\n{children.log_tail('ingress' if kind == 'ingress' else 'stub-sink')}") from None
    return sink


def topology_names(topology: Topology) -> tuple[list[str], list[str]]:
    """Every queue and exchange Topology.declare makes."""
    queues: list[str] = []
    exchanges = [topology.exchange]
    for plan in topology.triggers.values():
        queues.append(plan.queue)
        if plan.delivery is not None:
            queues += [plan.retry_queue(attempt) for attempt in range(1, plan.delivery.retry + 1)]
        if plan.dead_letter_queue:
            queues.append(plan.dead_letter_queue)
        if plan.dead_letter_exchange:
            exchanges.append(plan.dead_letter_exchange)
    return queues, exchanges


async def delete_topology(topology: Topology, out: dict[str, Any]) -> None:
    """Count the vision queue's messages (the scans the ingress routed), then delete every queue and exchange."""
    failed: list[str] = []
    queues, exchanges = topology_names(topology)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        vision = topology.triggers.get("vision")
        if vision is not None:
            with contextlib.suppress(Exception):
                channel = await connection.channel()
                queue = await channel.declare_queue(vision.queue, passive=True)
                out["vision_queue_messages"] = int(queue.declaration_result.message_count or 0)
                await channel.close()
        for name in queues:
            try:
                channel = await connection.channel()
                await (await channel.get_queue(name, ensure=False)).delete(if_unused=False, if_empty=False)
                await channel.close()
            except Exception as exc:
                failed.append(f"queue {name}: {type(exc).__name__}: {exc}")
        for name in exchanges:
            try:
                channel = await connection.channel()
                await (await channel.get_exchange(name, ensure=False)).delete(if_unused=False)
                await channel.close()
            except Exception as exc:
                failed.append(f"exchange {name}: {type(exc).__name__}: {exc}")
    finally:
        await connection.close()
    out["deleted"] = {"prefix": topology.prefix, "queues": len(queues) - len(failed), "exchanges": len(exchanges)}
    out["cleanup_failures"] = failed


# --- measurements of processes -----------------------------------------------------------------------------


def redis_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "redis-server":
                    return int(proc.name)
    return None


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return None


def local_ports_to(pid: int, remote_port: int) -> set[int]:
    """Local ports of the process's established TCP connections to `remote_port` (its fds ∩ /proc/net/tcp*)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def gateway_redis_clients(redis: aioredis.Redis, pid: int) -> dict[str, Any]:
    """The gateway's Redis connections: CLIENT LIST entries whose source port is one of the gateway's sockets."""
    ports = local_ports_to(pid, REDIS_PORT)
    clients: list[dict[str, Any]] = await redis.client_list()
    mine = [c for c in clients if int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) in ports]
    names = Counter(str(c.get("name") or "(unnamed)") for c in mine)
    return {"total": len(mine), "sockets": len(ports), "by_name": dict(names)}


async def gateway_gauges(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await http.get(f"{url}/metrics", timeout=10)).text
    wanted = ("eco2_gateway_sse_clients", "eco2_gateway_redis_reader_connections", "eco2_gateway_watched_streams")
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                gauges[sample.name] = sample.value
    return gauges


async def gateway_histograms(http: httpx.AsyncClient, url: str) -> tuple[HistogramState, HistogramState]:
    """The gateway's handler time for 202s and its K_SINK send time for successful sends."""
    text = (await http.get(f"{url}/metrics", timeout=10)).text
    families = list(text_string_to_metric_families(text))
    return (
        histogram_state(families, "eco2_gateway_accept_seconds", ("status", "202")),
        histogram_state(families, "eco2_gateway_sink_seconds", ("outcome", "ok")),
    )


def cpu_now(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cores_used(before: dict[str, float | None], after: dict[str, float | None], wall: float) -> dict[str, float | None]:
    used: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        used[name] = None if start is None or end is None or wall <= 0 else (end - start) / wall
    return used


async def sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


ACCEPT_QUANTILES: tuple[Quantile, ...] = ("p50", "p90", "p99")
HANDLER_NOTE = "its eco2_gateway_accept_seconds{status=202}"
SINK_NOTE = "its eco2_gateway_sink_seconds{outcome=ok}: the ingress's 202 after RabbitMQ's confirm"


# --- statistics --------------------------------------------------------------------------------------------


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
) -> AcceptRun:
    """Closed loop with `clients` users, or with `rate`, an open loop of that many arrivals/s over `clients` users."""
    groups = split(clients, min(procs, clients))
    processes = spawn_clients(children, "accept", len(groups), f"{clients}")
    try:
        first = 0
        for client, size in zip(processes, groups, strict=True):
            users = [f"bench-user-{i}" for i in range(first, first + size)]
            first += size
            config = {
                "url": gateway.url,
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
        cpu_before, (hist_before, sink_before) = cpu_now(pids), await gateway_histograms(http, gateway.url)
        await sleep_until(start_at + ACCEPT_WARMUP + seconds)
        cpu_after, (hist_after, sink_after) = cpu_now(pids), await gateway_histograms(http, gateway.url)
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
    gateway = await start_gateway(children, http, sink.url, secret, "accept")
    out["gateway_log"] = gateway.log_name
    pids = {"gateway": gateway.process.pid, "sink": sink.process.pid, "redis": redis_pid(), "rabbitmq": rabbitmq_pid()}
    runs: list[AcceptRun] = []
    out["runs"] = runs
    levels = [(BASELINE_CLIENTS, BASELINE_SECONDS, "1 client (unloaded)")]
    levels += [(n, float(args.accept_seconds), f"{n} clients") for n in ACCEPT_LEVELS]
    try:
        for clients, seconds, label in levels:
            procs = min(args.client_procs, clients)
            console.print(f"  {label}: {procs} client process(es), {ACCEPT_WARMUP:.0f} s warm-up + {seconds:.0f} s …")
            runs.append(
                await accept_run(
                    children, http, gateway, pids, secret, clients=clients, seconds=seconds, procs=procs, label=label
                )
            )
        # Mobile users are not back-to-back robots: N users each submitting about once a second (Poisson).
        for users in ACCEPT_LEVELS:
            label = f"{users} users at ~1 scan/s each (open loop, Poisson {users}/s)"
            console.print(f"  {label}: {ACCEPT_WARMUP:.0f} s warm-up + {args.accept_seconds:.0f} s …")
            runs.append(
                await accept_run(
                    children,
                    http,
                    gateway,
                    pids,
                    secret,
                    clients=users,
                    seconds=float(args.accept_seconds),
                    procs=min(args.client_procs, users),
                    label=label,
                    rate=float(users),
                )
            )
        rate = round(OPEN_LOOP_SHARE * max(run.rate for run in runs if run.offered is None))
        if rate >= 1:
            label = f"open loop, Poisson {rate}/s (½ the best)"
            console.print(
                f"  {label}: {OPEN_LOOP_USERS} users, {ACCEPT_WARMUP:.0f} s warm-up + {args.accept_seconds:.0f} s …"
            )
            runs.append(
                await accept_run(
                    children,
                    http,
                    gateway,
                    pids,
                    secret,
                    clients=OPEN_LOOP_USERS,
                    seconds=float(args.accept_seconds),
                    procs=args.client_procs,
                    label=label,
                    rate=float(rate),
                )
            )
    finally:
        children.stop(gateway.process)
    out["accepted_total"] = sum(run.accepted_total for run in runs)


# --- 2. SSE fan-out ----------------------------------------------------------------------------------------


async def sse_client(config: dict[str, Any]) -> None:
    """A client process following SSE streams; commands: {"open": n} (cumulative), then {"collect": seconds}.

    One httpx.AsyncClient per stream, as in accept_client: a shared pool of hundreds of connections costs O(N)
    per request and per response close, which would delay the events being measured.
    """
    jobs: list[list[str]] = config["jobs"]
    secret: str = config["secret"]
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(30.0, read=120.0)
    records: list[list[Any]] = []  # [job_id, seq, event, received (time.time())]
    failures: list[str] = []
    open_seconds: list[float] = []
    closed_after_terminal = 0
    opened = [asyncio.Event() for _ in jobs]
    tasks: list[asyncio.Task[None]] = []

    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=config["url"],
                    limits=limits,
                    timeout=timeout,
                    verify=tls,
                    headers={"authorization": f"Bearer {issue_token(user, secret, 3600)}"},
                )
            )
            for _, user in jobs
        ]

        async def follow(index: int) -> None:
            nonlocal closed_after_terminal
            job_id = jobs[index][0]
            started = time.perf_counter()
            last_status = ""
            try:
                async with clients[index].stream("GET", f"/api/v1/scan/{job_id}/events") as response:
                    if response.status_code != 200:
                        failures.append(f"{job_id}: {response.status_code} {(await response.aread())[:200]!r}")
                        return
                    async for message in aparse(response.aiter_lines()):
                        received = time.time()
                        records.append([job_id, int(message.id or 0), message.event, received])
                        last_status = str(json.loads(message.data).get("status"))
                        if not opened[index].is_set():
                            open_seconds.append(time.perf_counter() - started)
                            opened[index].set()
                # The server ended the stream; count it when that came right after the terminal event.
                closed_after_terminal += last_status in TERMINAL
            except httpx.HTTPError as exc:
                failures.append(f"{job_id}: {type(exc).__name__}: {exc}")
            finally:
                opened[index].set()

        emit({"ready": True})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            command: dict[str, Any] = json.loads(line)
            if "open" in command:
                first, upto = len(tasks), int(command["open"])
                tasks += [asyncio.create_task(follow(i)) for i in range(first, upto)]
                try:
                    async with asyncio.timeout(30):
                        await asyncio.gather(*(opened[i].wait() for i in range(first, upto)))
                except TimeoutError:
                    pass
                emit({"opened": sum(e.is_set() for e in opened[:upto]), "failures": len(failures)})
            elif "collect" in command:
                pending: set[asyncio.Task[None]] = set()
                if tasks:
                    _, pending = await asyncio.wait(tasks, timeout=float(command["collect"]))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                emit(
                    {
                        "records": records,
                        "failures": failures,
                        "open_seconds": open_seconds,
                        "closed_after_terminal": closed_after_terminal,
                        "still_open": len(pending),
                        "cpu_seconds": time.process_time(),
                    }
                )
                return


async def create_jobs(store: JobStore, jobs: Sequence[tuple[str, str]]) -> None:
    """As the gateway's submit records a job (JobStore.create; the hash's user_id is what a stream is checked
    against), without the submit itself."""
    for first in range(0, len(jobs), 100):
        await asyncio.gather(
            *(
                store.create(job_id, user, request={"image_url": f"{IMAGE_ORIGIN}/scans/{user}/1.jpg"})
                for job_id, user in jobs[first : first + 100]
            )
        )


async def write_transitions(store: JobStore, jobs: Sequence[tuple[str, str]], rate: float) -> dict[str, Any]:
    """vision, rule, answer, reward, done for every job, stage by stage, `rate` writes per second."""
    plan = [(job_id, user, stage) for stage in (*PIPELINE, Stage.DONE) for job_id, user in jobs]
    round_trips: list[float] = []
    result = json.dumps(RESULT)

    async def write(job_id: str, user: str, stage: Stage) -> None:
        started = time.perf_counter()
        if stage is Stage.DONE:
            await store.transition(
                job_id,
                user,
                Stage.DONE,
                JobStatus.DONE,
                message="완료되었어요",
                data={"result": RESULT},
                fields={"result": result},
            )
        else:
            await store.transition(job_id, user, stage, JobStatus.RUNNING, message=f"{stage.value} 완료")
        round_trips.append(time.perf_counter() - started)

    tasks: list[asyncio.Task[None]] = []
    began, started_at = time.perf_counter(), time.time()
    for index, item in enumerate(plan):
        delay = began + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(write(*item)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - began
    return {
        "writes": len(plan),
        "started_at": started_at,
        "seconds": wall,
        "rate": len(plan) / wall,
        "round_trips": round_trips,
    }


async def stream_stamps(redis: aioredis.Redis, job_ids: Sequence[str]) -> dict[tuple[str, int], float]:
    """(job, seq) → the entry's `at`: time.time() as JobStore.transition sent the write."""
    stamps: dict[tuple[str, int], float] = {}
    for first in range(0, len(job_ids), 200):
        chunk = job_ids[first : first + 200]
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.xrange(keys.job_events(job_id))
            replies = await pipe.execute()
        for job_id, entries in zip(chunk, replies, strict=True):
            for _, fields in entries:
                stamps[(job_id, int(fields["seq"]))] = float(fields["at"])
    return stamps


TIMELINE_WINDOW = 0.5


def timeline(timed: Sequence[tuple[float, float, int]], processes: int) -> list[dict[str, Any]]:
    """Delivery latency by when the event was written (TIMELINE_WINDOW windows), overall and per client process:
    a stall seen by every client process at once is upstream of them (gateway, Redis, or the machine)."""
    if not timed:
        return []
    first = min(t for t, _, _ in timed)
    windows: dict[int, list[tuple[float, int]]] = {}
    for written, latency, process in timed:
        windows.setdefault(int((written - first) / TIMELINE_WINDOW), []).append((latency, process))
    rows = []
    for index in sorted(windows):
        values = sorted(latency for latency, _ in windows[index])
        per_process = []
        for process in range(processes):
            mine = sorted(latency for latency, p in windows[index] if p == process)
            per_process.append(percentile(mine, 0.99) if mine else None)
        rows.append(
            {
                "from_s": round(index * TIMELINE_WINDOW, 2),
                "events": len(values),
                "p50": percentile(values, 0.50),
                "p99": percentile(values, 0.99),
                "max": values[-1],
                "p99_by_client_process": per_process,
            }
        )
    return rows


@dataclass
class Step:
    streams: int
    open_seconds: float
    redis: dict[str, Any]
    gauges: dict[str, float]
    rss_mb: float | None


async def sse_benchmark(
    console: Console,
    children: Children,
    http: httpx.AsyncClient,
    redis: aioredis.Redis,
    sink: Sink,
    secret: str,
    args: argparse.Namespace,
    out: dict[str, Any],
) -> None:
    streams, procs = int(args.sse_streams), min(args.client_procs, int(args.sse_streams))
    gateway = await start_gateway(children, http, sink.url, secret, "sse")
    out["gateway_log"] = gateway.log_name
    steps: list[Step] = []
    out["steps"] = steps
    try:
        run = uuid.uuid4().hex[:8]
        jobs = [(f"ssebench-{run}-{i}", f"sse-user-{i}") for i in range(streams)]
        store = JobStore(redis, ttl_seconds=3600)
        await create_jobs(store, jobs)
        clients = spawn_clients(children, "sse", procs, "fanout")
        # Round robin, so that every stretch of the writes reaches every client process.
        for index, client in enumerate(clients):
            await client.send({"url": gateway.url, "secret": secret, "jobs": jobs[index::procs]})
        for client in clients:
            await client.receive()
        out["idle"] = {"redis": await gateway_redis_clients(redis, gateway.process.pid)}
        for target in sorted({n for n in SSE_STEPS if n < streams} | {streams}):
            console.print(f"  opening streams up to {target} …")
            began = time.perf_counter()
            for client, count in zip(clients, split(target, procs), strict=True):
                await client.send({"open": count})
            opened = 0
            for client in clients:
                reply = await client.receive()
                opened += int(reply["opened"])
                if reply["failures"]:
                    raise BenchError(f"{client.name}: {reply['failures']} streams failed to open")
            took = time.perf_counter() - began
            if opened != target:
                raise BenchError(f"only {opened} of {target} streams opened")
            await asyncio.sleep(SSE_SETTLE)
            steps.append(
                Step(
                    target,
                    took,
                    await gateway_redis_clients(redis, gateway.process.pid),
                    await gateway_gauges(http, gateway.url),
                    rss_mb(gateway.process.pid),
                )
            )
        console.print(f"  writing {streams * LIVE_EVENTS_PER_JOB} transitions at {args.sse_rate}/s …")
        pids = {"gateway": gateway.process.pid, "redis": redis_pid()}
        cpu_before, wall_before = cpu_now(pids), time.perf_counter()
        writes = await write_transitions(store, jobs, float(args.sse_rate))
        replies = []
        for client in clients:
            await client.send({"collect": SSE_COLLECT_TIMEOUT})
        for client in clients:
            replies.append(await client.receive(timeout=SSE_COLLECT_TIMEOUT + REPLY_TIMEOUT))
        out["cores_during_writes"] = cores_used(cpu_before, cpu_now(pids), time.perf_counter() - wall_before)
        out["after"] = {
            "redis": await gateway_redis_clients(redis, gateway.process.pid),
            "gauges": await gateway_gauges(http, gateway.url),
        }
        stamps = await stream_stamps(redis, [job_id for job_id, _ in jobs])
    finally:
        children.stop(gateway.process)
    records = [[*record, index] for index, reply in enumerate(replies) for record in reply["records"]]
    live = [r for r in records if int(r[1]) > 1]  # seq 1 (queued) is the replay, before any write
    latencies: list[float] = []
    by_stage: dict[str, list[float]] = {}
    timed: list[tuple[float, float, int]] = []  # (written at, latency, client process)
    unstamped = 0
    for job_id, seq, event, received, process in live:
        stamp = stamps.get((str(job_id), int(seq)))
        if stamp is None:
            unstamped += 1
            continue
        latencies.append(float(received) - stamp)
        by_stage.setdefault(str(event), []).append(float(received) - stamp)
        timed.append((stamp, float(received) - stamp, int(process)))
    out["timeline"] = timeline(timed, len(replies))
    expected = streams * LIVE_EVENTS_PER_JOB
    closed = sum(int(reply["closed_after_terminal"]) for reply in replies)
    still_open = sum(int(reply["still_open"]) for reply in replies)
    failures = [f for reply in replies for f in reply["failures"]]
    note = f"{writes['rate']:.0f} writes/s; {len(live)}/{expected} events received"
    if len(live) != expected:
        note += f" ({expected - len(live)} MISSING)"
    note += f"; closed by the gateway after done: {closed}/{streams}"
    rows = [
        sample_row(
            f"delivery: write → SSE event received, {streams} streams",
            latencies,
            target=TARGET_SSE_P99,
            note=note,
            extra={"expected": expected, "received": len(live), "closed_after_done": closed},
        )
    ]
    for stage in (*PIPELINE, Stage.DONE):
        rows.append(sample_row(f"  {stage.value} events", by_stage.get(stage.value, [])))
    rows.append(
        sample_row(
            "  the write itself (JobStore.transition round trip)", writes["round_trips"], note="from this process"
        )
    )
    open_all = [float(x) for reply in replies for x in reply["open_seconds"]]
    rows.append(
        sample_row(
            "GET …/events → replayed first event",
            open_all,
            note="every stream, as opened in the steps (all of a step's streams at once)",
        )
    )
    out["rows"] = rows
    out["writes"] = {k: v for k, v in writes.items() if k != "round_trips"}
    out["stream_failures"] = failures
    out["streams_still_open_at_collect"] = still_open
    out["closed_after_done"] = closed
    out["events_without_stream_entry"] = unstamped
    out["sse_client_cpu_seconds"] = [reply["cpu_seconds"] for reply in replies]


# --- report ------------------------------------------------------------------------------------------------


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


def print_header(console: Console, machine: dict[str, Any], nofile: tuple[int, int]) -> None:
    console.rule("[bold]Eco² gateway: accept latency and SSE fan-out")
    console.print(
        f"machine   {machine['hostname']}: nproc {machine['nproc']} ({machine['cpu_model']}), "
        f"{machine['mem_total_gb']} GB RAM; load average {' '.join(map(str, machine['load_average_start']))} "
        "(a shared, noisy machine)"
    )
    console.print(f"python    {machine['python']} on {machine['platform']}; RLIMIT_NOFILE soft/hard {nofile}")
    console.print(
        "gateway   `python -m eco2.serving gateway` (uvicorn, uvloop + httptools: GatewayFunction.fast_http), "
        f"one process, Redis DB {REDIS_DB}, LOG_LEVEL=INFO, ECO2_REDIS_MAX_CONNECTIONS="
        f"{POOL_SIZE} (default), rate limit out of the way"
    )


def json_default(value: object) -> object:
    if isinstance(value, Row):
        return value.as_json()
    if isinstance(value, AcceptRun):
        return value.summary()
    if isinstance(value, Step):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


# --- main --------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, console: Console, results: dict[str, Any]) -> None:
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    secret = secrets.token_urlsafe(48)  # 64 characters: HS256 wants at least 32 bytes
    with tempfile.TemporaryDirectory(prefix="eco2-gwbench-") as tmp_name:
        (Path(tmp_name) / "logs").mkdir()
        children = Children(Path(tmp_name) / "logs", int(results["config"]["nofile_wanted"]))
        redis = aioredis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
        http = httpx.AsyncClient(timeout=30)
        sink: Sink | None = None
        locked = False
        try:
            async with asyncio.timeout(BUDGET_SECONDS):
                # Two runs at once would flush each other's data: the first one holds a lock key in the DB.
                owner = f"{os.getpid()}@{time.time():.0f}"
                if not await redis.set(LOCK_KEY, owner, nx=True, ex=int(BUDGET_SECONDS) + 60):
                    held = await redis.get(LOCK_KEY)
                    raise BenchError(f"another gateway benchmark ({held!r}) is using Redis DB {REDIS_DB}")
                results["redis_db_keys_before"] = await redis.dbsize() - 1
                await redis.flushdb()
                await redis.set(LOCK_KEY, owner, ex=int(BUDGET_SECONDS) + 60)
                locked = True
                sink = await start_sink(children, http, args.sink)
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
            if sink is not None and sink.topology is not None:
                results["rabbitmq"] = {}
                try:
                    await asyncio.wait_for(delete_topology(sink.topology, results["rabbitmq"]), timeout=30)
                except Exception as exc:
                    results["rabbitmq"]["cleanup_failures"] = [f"{type(exc).__name__}: {exc}"]
            if locked:  # never flush the DB of another run
                try:
                    await asyncio.wait_for(redis.flushdb(), timeout=10)
                    results["redis_db_flushed"] = True
                except Exception as exc:
                    results["redis_db_flushed"] = f"{type(exc).__name__}: {exc}"
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
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks.gateway", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("results/gateway.json"), help="JSON results file")
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
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    machine = machine_info()
    print_header(console, machine, nofile)
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "eco2 gateway",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": {
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
    report(console, results, machine)
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
