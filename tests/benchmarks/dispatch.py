"""The hop rig of tests.benchmarks.hop: the runner's real TriggerConsumer (eco2_tools.local.dispatcher) and ingress on
a throwaway topology over the real RabbitMQ, delivering to a sink in a separate process, in a closed loop.

The topology is declared by eco2_tools.local.topology from the manifests in tests/benchmarks/fixtures (one Trigger
`bench` on `type: eco2_tools.bench.ping`, parallelism 10, retry 0) under a unique prefix `bench-<uuid>`. Events are
published with eco2_tools.local.messages.to_message (which stamps x-eco2-published-at) through a publisher-confirm
channel. Closed loop: an event is published when a permit is free, and a delivery gives its permit back when it
finishes (the Endpoint's release): with 1 permit that is pure latency, with 10 (the Trigger's parallelism) the
latency of a saturated dispatcher. The ingress (eco2_tools.local.ingress.create_ingress) is served in this process,
as the runner serves it, its HTTP client in a thread of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import httpx
import uvicorn
import yaml
from aio_pika.abc import AbstractExchange, AbstractRobustConnection
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2_tools.bench.harness import BenchError
from eco2_tools.bench.processes import cpu_seconds, rabbitmq_pid
from eco2_tools.bench.report import HistogramState, histogram_state
from eco2_tools.local.client import runner_session
from eco2_tools.local.dispatcher import Endpoint, TriggerConsumer
from eco2_tools.local.ingress import create_ingress
from eco2_tools.local.messages import PUBLISHED_AT_HEADER, to_message
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.replicas import free_port
from eco2_tools.local.topology import Topology
from eco2_tools.manifests import MANIFEST_DIRS, Manifests

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HOST = "127.0.0.1"
TRIGGER = "bench"
WARMUP = 100
SATURATED_IN_FLIGHT = 10
DELIVERY_STALL_SECONDS = 10.0  # no delivery finishing for this long means the run is broken


def hop_histogram(metrics: RunnerMetrics) -> HistogramState:
    return histogram_state(metrics.registry.collect(), "eco2_runner_hop_seconds", ("trigger", TRIGGER))


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
        "type": "eco2_tools.bench.ping",
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
        self.http: aiohttp.ClientSession | None = None  # the runner's delivery client, built in start (in the loop)
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
        self.http = runner_session()
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
        if self.http is not None:
            await self.http.close()
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
