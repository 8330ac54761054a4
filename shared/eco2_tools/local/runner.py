"""The whole pack on one machine: topology, ingress, dispatchers and function processes, from the manifests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from starlette.types import ASGIApp

from eco2.capacity import CapacitySettings
from eco2.connections import amqp_connect_robust
from eco2.env import env_float
from eco2.sender_auth import TOKEN_ENV
from eco2_tools.local.client import runner_session
from eco2_tools.local.deadletters import DeadLetterConsumer
from eco2_tools.local.dependencies import check_dependencies, without_password
from eco2_tools.local.dispatcher import PAUSE_MAX, Endpoint, TriggerConsumer
from eco2_tools.local.edge import Edge
from eco2_tools.local.emulators import emulator_env, start_s3_emulator
from eco2_tools.local.health import broker_problem
from eco2_tools.local.ingress import create_ingress
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.migration import migrate_legacy_queues
from eco2_tools.local.processes import die_with_parent
from eco2_tools.local.replicas import FunctionPool, wait_healthy
from eco2_tools.local.schedules import start_schedules
from eco2_tools.local.sources import SourceConsumer, start_sources
from eco2_tools.local.state import StateReporter
from eco2_tools.local.topology import DELIVERY_LIMIT, Topology
from eco2_tools.manifests import Manifests

log = logging.getLogger("eco2_tools.local.runner")
# Deliveries in flight get this long to finish at a stop: below `eco2 down`'s 30 s before it SIGKILLs the runner.
RUNNER_SHUTDOWN_GRACE_SECONDS = 20.0


@dataclass
class RunnerOptions:
    root: Path  # the checkout: functions/ and the working directory of function processes
    # What Manifests.load reads (default: root's knative/ and eventing/): a checkout, an overlay, a rendered file.
    manifests_dir: Path | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    ingress_port: int = 8081
    gateway_port: int = 8080
    standin_port: int = 8090
    # None: start the stand-in model when no OPENAI_API_KEY is set (the design's default).
    standin: bool | None = None
    # The LOCAL S3 emulator for photo uploads (local.emulators); None: start it unless S3_ENDPOINT_URL is set.
    storage: bool | None = None
    s3_port: int = 8095
    prefix: str = "eco2"
    state_dir: Path | None = None
    reap_interval: float = 1.0
    extra_env: dict[str, str] = field(default_factory=dict)
    # Deliveries of one message without an outcome before RabbitMQ dead-letters it (quorum trigger queues);
    # a queue's arguments cannot change, so this is for throwaway topologies (tests) only.
    delivery_limit: int = DELIVERY_LIMIT
    # The longest pause before a message whose outcome could not be made durable goes back to its queue.
    pause_max: float = PAUSE_MAX
    # The pack's sender credential (eco2.sender_auth); None: a random one per start of the pack.
    event_token: str | None = None

    @classmethod
    def from_env(cls, root: Path, env: dict[str, str]) -> RunnerOptions:
        manifests = env.get("ECO2_MANIFESTS")
        state = env.get("ECO2_STATE_DIR")
        return cls(
            root=root,
            manifests_dir=Path(manifests).resolve() if manifests else None,
            amqp_url=env.get("AMQP_URL") or cls.amqp_url,
            redis_url=env.get("REDIS_URL") or cls.redis_url,
            ingress_port=int(env.get("ECO2_INGRESS_PORT") or cls.ingress_port),
            gateway_port=int(env.get("ECO2_GATEWAY_PORT") or cls.gateway_port),
            standin_port=int(env.get("ECO2_STANDIN_PORT") or cls.standin_port),
            s3_port=int(env.get("ECO2_S3_PORT") or cls.s3_port),
            prefix=env.get("ECO2_TOPOLOGY_PREFIX") or cls.prefix,
            state_dir=Path(state).resolve() if state else None,
            event_token=env.get(TOKEN_ENV) or None,
        )

    @property
    def state_path(self) -> Path:
        return (self.state_dir or self.root / ".eco2") / "runner.json"


class LocalPack:
    def __init__(self, options: RunnerOptions) -> None:
        self.options = options
        self.manifests = Manifests.load(options.manifests_dir or options.root)
        self.topology = Topology.plan(self.manifests, options.prefix, delivery_limit=options.delivery_limit)
        self.metrics = RunnerMetrics()
        # The functions' shared model budget (ECO2_MODEL_*), in the state for `eco2 status` in another shell.
        self.model_capacity = dataclasses.asdict(CapacitySettings.from_env({**os.environ, **options.extra_env}))
        self.pools: dict[str, FunctionPool] = {}
        self._consumers: list[TriggerConsumer] = []
        self._dead_letter_consumers: list[DeadLetterConsumer] = []
        self.sources: list[SourceConsumer] = []  # the manifests' RabbitmqSources (eco2_tools.local.sources)
        self._connection: AbstractRobustConnection | None = None
        self.publisher: AbstractChannel | None = None  # publisher confirms: the ingress's and every reply's
        self.state = StateReporter(options.state_path, self.topology, options.redis_url)
        # All of the runner's HTTP (eco2_tools.local.client), built in start: aiohttp wants the running loop.
        self._http: aiohttp.ClientSession | None = None
        self._ingress: uvicorn.Server | None = None
        self._ingress_task: asyncio.Task[None] | None = None
        # The cluster ingress in front of the gateway (eco2_tools.local.edge), on the gateway's public port.
        self._edge: uvicorn.Server | None = None
        self._edge_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._standin: asyncio.subprocess.Process | None = None
        self.model_url: str | None = None
        self._emulator: asyncio.subprocess.Process | None = None
        self.storage_env: dict[str, str] = {}
        self.started_at = time.time()
        # Every sender of the pack presents it; the ingress refuses events without it (as the broker's EventPolicy).
        self.event_token = options.event_token or secrets.token_urlsafe(32)

    @property
    def state_dir(self) -> Path:
        return self.options.state_path.parent

    @property
    def ingress_url(self) -> str:
        return f"http://{self.options.host}:{self.options.ingress_port}"

    async def start(self) -> None:
        await check_dependencies(self.options.redis_url, self.options.amqp_url)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        http = self._http = runner_session(self.topology.deliveries_in_flight())
        await self._start_model(http)
        await self._start_storage(http)
        # Named, so `rabbitmqctl list_connections name client_properties` tells the runner's connection apart.
        self._connection = await amqp_connect_robust(
            self.options.amqp_url, client_properties={"connection_name": f"eco2-runner {self.options.prefix}"}
        )
        setup_channel = await self._connection.channel()
        exchange = await self.topology.declare(setup_channel, self.state_dir / f"bindings-{self.options.prefix}.json")
        await migrate_legacy_queues(self.options.amqp_url, self.topology)
        publisher = self.publisher = await self._connection.channel(publisher_confirms=True)
        broker_exchange = await publisher.get_exchange(exchange.name)
        self._build_pools(http)
        await self._start_ingress(broker_exchange)
        if "gateway" in self.pools:
            await self._start_edge(http)
        await self._start_consumers(publisher, broker_exchange, http)
        self.sources = await start_sources(
            self.manifests, self._connection, self.ingress_url, http, self.options.prefix, self.event_token
        )
        await asyncio.gather(*(pool.ensure_min_scale() for pool in self.pools.values()))
        self._tasks.append(asyncio.create_task(self._housekeeping()))
        every = os.environ.get("ECO2_PING_EVERY_SECONDS")  # the PingSources' ticks, at a fixed period (tests)
        self._tasks += start_schedules(self.manifests, self.endpoint, http, every_seconds=float(every or 0) or None)
        await self.write_state(ready=True)

    def _function_env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.options.redis_url,
            "K_SINK": self.ingress_url,
            TOKEN_ENV: self.event_token,
            "AMQP_URL": self.options.amqp_url,  # the cache-sync consumers (gateway, authz, reward)
            "ECO2_ENV": os.environ.get("ECO2_ENV", "development"),
            **self.storage_env,
            # persist writes and the gateway reads the same store: without a DATABASE_URL, one SQLite file.
            "DATABASE_URL": os.environ.get("DATABASE_URL")
            or f"sqlite:///{(self.state_dir / 'eco2.sqlite3').resolve()}",
            **self.options.extra_env,
        }
        if self.model_url:
            env["OPENAI_BASE_URL"] = f"{self.model_url}/v1"
            # The stand-in serves the sample images the development scans point at.
            env.setdefault("ECO2_IMAGE_URL_ALLOWLIST", self.model_url)
            env.setdefault("ECO2_IMAGE_URL_TRUSTED", self.model_url)
        return env

    def _build_pools(self, http: aiohttp.ClientSession) -> None:
        env = self._function_env()
        for name, service in sorted(self.manifests.services.items()):
            self.pools[name] = FunctionPool(
                service,
                env=env,
                cwd=self.options.root,
                http=http,
                metrics=self.metrics,
                log_dir=self.state_dir / "logs",
            )

    async def endpoint(self, service: str) -> Endpoint:
        pool = self.pools.get(service)
        if pool is None:
            raise LookupError(f"no Service {service!r} in knative/")
        replica = await pool.acquire()
        return Endpoint(replica.url, lambda: pool.release(replica))

    async def _start_model(self, http: aiohttp.ClientSession) -> None:
        wants_standin = self.options.standin
        if wants_standin is None:
            wants_standin = not os.environ.get("OPENAI_API_KEY")
        if not wants_standin:
            self.model_url = None
            return
        url = f"http://{self.options.host}:{self.options.standin_port}"
        log_file = (self.state_dir / "logs" / "model-standin.log").open("ab")
        self._standin = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eco2_tools.cli",
            "model-standin",
            "--port",
            str(self.options.standin_port),
            cwd=self.options.root,
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, **self.options.extra_env},
            preexec_fn=die_with_parent,
        )
        log_file.close()
        await wait_healthy(http, url, self._standin)
        self.model_url = url

    async def _start_storage(self, http: aiohttp.ClientSession) -> None:
        wanted = self.options.storage
        if wanted is None:
            wanted = not (os.environ.get("S3_ENDPOINT_URL") or self.options.extra_env.get("S3_ENDPOINT_URL"))
        if wanted:
            log_path = self.state_dir / "logs" / "s3-emulator.log"
            self._emulator, url = await start_s3_emulator(
                self.options.host,
                self.options.s3_port,
                http=http,
                cwd=self.options.root,
                log_path=log_path,
                preexec_fn=die_with_parent,
            )
            self.storage_env = emulator_env(url)

    def readiness(self) -> str | None:
        """Why the ingress cannot take events now (the broker connection or the publisher is down), or None."""
        return broker_problem(self._connection, self.publisher)

    async def _start_ingress(self, exchange: Any) -> None:
        app = create_ingress(exchange, self.metrics, self.readiness, token=self.event_token)
        self._ingress, self._ingress_task = await _serve(app, self.options.host, self.options.ingress_port, "ingress")

    async def _start_edge(self, http: aiohttp.ClientSession) -> None:
        """The gateway's public port, served as the cluster's ingress serves it: authz asked first."""
        edge = Edge(self.endpoint, http, self.metrics)
        self._edge, self._edge_task = await _serve(edge, self.options.host, self.options.gateway_port, "edge")

    async def _start_consumers(self, publisher: Any, broker_exchange: Any, http: aiohttp.ClientSession) -> None:
        assert self._connection is not None
        for plan in self.topology.triggers.values():
            consumer = TriggerConsumer(
                plan,
                channel=await self._connection.channel(),
                publisher=publisher,
                broker_exchange=broker_exchange,
                endpoints=self.endpoint,
                http=http,
                metrics=self.metrics,
                pause_max=self.options.pause_max,
                connection=self._connection,
            )
            await consumer.start()
            self._consumers.append(consumer)
            if plan.delivery is not None and plan.dead_letter_queue is not None:
                letters = DeadLetterConsumer(
                    plan,
                    plan.delivery,
                    channel=await self._connection.channel(),
                    endpoints=self.endpoint,
                    http=http,
                    metrics=self.metrics,
                )
                await letters.start()
                self._dead_letter_consumers.append(letters)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.options.reap_interval)
            await self.housekeeping_tick()

    async def housekeeping_tick(self) -> None:
        """Reap idle processes and write the state; a failure is logged and the next tick tries again."""
        for name, pool in self.pools.items():
            try:
                await pool.reap_idle()
            except Exception:
                log.exception("housekeeping: reaping idle processes failed", extra={"fields": {"function": name}})
        try:
            await self.write_state(ready=True)
        except Exception:
            log.exception(
                "housekeeping: writing the state file failed", extra={"fields": {"path": str(self.options.state_path)}}
            )

    def snapshot(self) -> dict[str, Any]:
        gateway = self.pools.get("gateway")
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "root": str(self.options.root),
            "redis": self.options.redis_url,
            "amqp": without_password(self.options.amqp_url),
            "ingress": self.ingress_url,
            # What a developer's curl into the ingress presents (Authorization: Bearer ...): the state file is theirs.
            "event_token": self.event_token,
            "gateway": f"http://{self.options.host}:{self.options.gateway_port}" if gateway else None,
            "model": self.model_url,
            "model_is_standin": self._standin is not None,
            "model_capacity": self.model_capacity,
            "storage": self.storage_env.get("S3_ENDPOINT_URL"),
            "functions": {name: pool.snapshot() for name, pool in self.pools.items()},
            # Which function a dead letter's event was for (`eco2 status` groups the recorded letters by it).
            "routes": [
                {"function": plan.trigger.subscriber_service, "filter": plan.trigger.filter_attributes}
                for plan in self.topology.triggers.values()
            ],
        }

    async def write_state(self, *, ready: bool) -> None:
        await self.state.refresh(self._connection, self.publisher)
        self.state.write(self.snapshot(), ready=ready)

    async def stop(self) -> None:
        # Every Trigger stops taking messages at once and its deliveries in flight finish (acked, replies
        # published) within one shared grace period, before the functions behind them are stopped.
        grace = env_float(os.environ, "ECO2_SHUTDOWN_GRACE_SECONDS", RUNNER_SHUTDOWN_GRACE_SECONDS, minimum=0)
        await asyncio.gather(*(consumer.stop(grace) for consumer in self._consumers), return_exceptions=True)
        for letters in self._dead_letter_consumers:
            await letters.stop()
        for source in self.sources:
            await source.stop()
        for server, task in ((self._edge, self._edge_task), (self._ingress, self._ingress_task)):
            if server is not None:
                # Let uvicorn close its socket itself; cancelling its task would leak the listener.
                server.should_exit = True
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(pool.stop() for pool in self.pools.values()), return_exceptions=True)
        for child in (self._standin, self._emulator):
            if child is not None and child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), timeout=10)
                except TimeoutError:
                    child.kill()  # a stand-in still finishing a slow stream must not hold `eco2 down` up
                    await child.wait()
        if self._connection is not None:
            await self._connection.close()
        if self._http is not None:
            await self._http.close()
        await self.state.aclose()
        with contextlib.suppress(FileNotFoundError):
            self.options.state_path.unlink()


async def _serve(app: ASGIApp, host: str, port: int, what: str) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """`app` served by uvicorn inside the runner's loop, listening once this returns."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    # Bind here so a taken port is an OSError we report, not a SystemExit from inside uvicorn.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise OSError(f"the {what} cannot listen on http://{host}:{port}: {exc.strerror}") from None
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            raise RuntimeError(f"the {what} could not listen on http://{host}:{port}")
        await asyncio.sleep(0.01)
    return server, task


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the runner: the runner owns SIGINT/SIGTERM, so the server must not capture them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_until_stopped(pack: LocalPack, stop: asyncio.Event) -> None:
    try:
        await pack.start()
        await stop.wait()
    finally:
        await pack.stop()
