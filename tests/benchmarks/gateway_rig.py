"""The gateway benchmark's rig (tests.benchmarks.gateway): its settings, the client processes, the gateway
process started as its manifest says, the sink (the broker ingress over RabbitMQ, or a stub), and what is
measured of processes (CPU, RSS, Redis connections, the gateway's own metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import redis.asyncio as aioredis
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eco2.gateway.context import POOL_CLIENT_NAME, READER_CLIENT_NAME
from eco2.gateway.settings import GatewaySettings
from eco2.jobs import Stage
from eco2_tools.bench.harness import BenchError
from eco2_tools.bench.processes import Children, cpu_seconds, function_env, wait_ready
from eco2_tools.bench.report import (
    HistogramState,
    Quantile,
    histogram_state,
)
from eco2_tools.local.ingress import create_ingress
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.processes import container_command
from eco2_tools.local.replicas import free_port
from eco2_tools.local.topology import Topology
from eco2_tools.manifests import Manifests

ROOT = Path(__file__).resolve().parents[2]
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_DB = int(os.environ.get("ECO2_BENCH_GATEWAY_REDIS_DB", "13"))  # flushed at the start and the end
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
    env = {k: v for k, v in function_env().items() if not k.startswith("ECO2_")}
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


def gateway_env(sink_url: str, secret: str, port: int, metrics_port: int) -> dict[str, str]:
    """What the runner gives a function process, with the benchmark's settings; inherited ECO2_* dropped."""
    drop = {"K_SINK", "REDIS_URL", "PORT", "HOST", "LOG_LEVEL"}
    env = {k: v for k, v in function_env().items() if not k.startswith("ECO2_") and k not in drop}
    env.update(
        {
            "PORT": str(port),
            "HOST": HOST,
            "ECO2_METRICS_PORT": str(metrics_port),
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
    metrics_url: str  # its /metrics, on the metrics port (eco2.metrics_port)


async def start_gateway(children: Children, sink_url: str, secret: str, tag: str) -> Gateway:
    port, metrics_port = free_port(), free_port()
    log_name = f"gateway-{tag}"
    # The manifest's command, as the runner runs it (the venv's `eco2` console script).
    command = container_command(("eco2", "serve", "gateway"))
    process = children.spawn(command, env=gateway_env(sink_url, secret, port, metrics_port), log_name=log_name)
    url = f"http://{HOST}:{port}"
    try:
        await wait_ready(url, process)
    except BenchError as exc:
        raise BenchError(f"gateway: {exc}\n{children.log_tail(log_name)}") from None
    return Gateway(url, process, log_name, f"http://{HOST}:{metrics_port}/metrics")


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


async def start_sink(children: Children, kind: str) -> Sink:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in function_env().items() if not k.startswith("ECO2_")}
    module = [sys.executable, "-m", "tests.benchmarks.gateway"]
    if kind == "ingress":
        prefix = f"gwbench-{uuid.uuid4().hex[:12]}"
        topology = Topology.plan(Manifests.load(ROOT), prefix)
        process = children.spawn([*module, "--serve-ingress", str(port), prefix], env=env, log_name="ingress")
        description = (
            f"the broker ingress (eco2_tools.local.ingress.create_ingress) in its own process over RabbitMQ, "
            f"topology of the pack's manifests under the throwaway prefix {prefix} "
            f"({topology.queue_type} queues); 202 after the publisher confirm"
        )
        sink = Sink(kind, url, process, description, topology)
    else:
        process = children.spawn([*module, "--serve-stub", str(port)], env=env, log_name="stub-sink")
        sink = Sink(kind, url, process, "a stub: uvicorn + Starlette in its own process, answers 202 to everything")
    try:
        await wait_ready(url, process)
    except BenchError as exc:
        raise BenchError(f"sink: {exc}\n{children.log_tail('ingress' if kind == 'ingress' else 'stub-sink')}") from None
    return sink


@contextlib.asynccontextmanager
async def claimed_db(redis: aioredis.Redis, results: dict[str, Any]) -> AsyncIterator[None]:
    """The benchmark's Redis DB, flushed before and after; two runs at once would flush each other's data, so the
    first one holds a lock key in the DB and a second one fails."""
    owner = f"{os.getpid()}@{time.time():.0f}"
    if not await redis.set(LOCK_KEY, owner, nx=True, ex=int(BUDGET_SECONDS) + 60):
        held = await redis.get(LOCK_KEY)
        raise BenchError(f"another gateway benchmark ({held!r}) is using Redis DB {REDIS_DB}")
    try:
        results["redis_db_keys_before"] = await redis.dbsize() - 1
        await redis.flushdb()
        await redis.set(LOCK_KEY, owner, ex=int(BUDGET_SECONDS) + 60)
        yield
    finally:
        try:
            await asyncio.wait_for(redis.flushdb(), timeout=10)
            results["redis_db_flushed"] = True
        except Exception as exc:
            results["redis_db_flushed"] = f"{type(exc).__name__}: {exc}"


async def remove_sink(sink: Sink | None, results: dict[str, Any]) -> None:
    """The sink's throwaway topology deleted, what was deleted (or not) in results["rabbitmq"]."""
    if sink is not None and sink.topology is not None:
        results["rabbitmq"] = {}
        try:
            await asyncio.wait_for(delete_topology(sink.topology, results["rabbitmq"]), timeout=30)
        except Exception as exc:
            results["rabbitmq"]["cleanup_failures"] = [f"{type(exc).__name__}: {exc}"]


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
        # vision's normal-priority queues, one per shard.
        visions = [p.queue for p in topology.triggers.values() if p.trigger.subscriber_service == "vision"]
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            counts = [await channel.declare_queue(name, passive=True) for name in visions]
            out["vision_queue_messages"] = sum(int(q.declaration_result.message_count or 0) for q in counts)
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
    names = Counter(_role_of(str(c.get("name") or "(unnamed)")) for c in mine)
    return {"total": len(mine), "sockets": len(ports), "by_name": dict(names)}


def _role_of(name: str) -> str:
    """A gateway client's name without its instance suffix (eco2.gateway.context.client_names): its role."""
    for role in (READER_CLIENT_NAME, POOL_CLIENT_NAME):  # the reader's name starts with the pool's
        if name.startswith(f"{role}-"):
            return role
    return name


async def gateway_gauges(http: httpx.AsyncClient, metrics_url: str) -> dict[str, float]:
    text = (await http.get(metrics_url, timeout=10)).text
    wanted = ("eco2_gateway_sse_clients", "eco2_gateway_redis_reader_connections", "eco2_gateway_watched_streams")
    gauges: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                gauges[sample.name] = sample.value
    return gauges


async def gateway_histograms(http: httpx.AsyncClient, metrics_url: str) -> tuple[HistogramState, HistogramState]:
    """The gateway's handler time for 202s and its K_SINK send time for successful sends."""
    text = (await http.get(metrics_url, timeout=10)).text
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


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()
