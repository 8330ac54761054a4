"""Function processes for one Knative Service: started on demand, scaled by concurrency, stopped when idle.

min-scale 0 means no process until the first event (which waits for the cold start, it is not failed);
the concurrency `target` and `max-scale` decide how many run under load; a replica idle for the Service's
window is stopped (never below min-scale); a crashed replica is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from eco2_tools.local.client import phase_timeout, request_status
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.processes import start_process
from eco2_tools.manifests import ServiceSpec

log = logging.getLogger("eco2_tools.local.replicas")
# Knative's max-scale 0 means "unbounded"; one machine is not, so cap it.
LOCAL_MAX_SCALE = 8
COLD_START_TIMEOUT = 30.0
READINESS = "/readyz"
LIVENESS = "/healthz"
PROBE_TIMEOUT = phase_timeout(1.0)  # one probe; a process that cannot answer in a second is asked again


class Running(Protocol):
    """A started process as far as waiting for it goes (asyncio's and subprocess's both qualify; a Popen's
    returncode is refreshed by polling it)."""

    @property
    def returncode(self) -> int | None: ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(
    http: aiohttp.ClientSession, url: str, process: Running, timeout: float = COLD_START_TIMEOUT
) -> None:
    """Poll GET /readyz until 200 (started, and its dependencies reachable), as Knative's readiness probe
    would; GET /healthz for a process without /readyz (404: an older function, the stand-in model).
    Fail if the process exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    probe = READINESS
    while time.monotonic() < deadline:
        if isinstance(process, subprocess.Popen):
            process.poll()
        if process.returncode is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} while starting (port taken?)")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):  # not listening yet, or too slow to answer
            status = await request_status(http, "GET", f"{url}{probe}", timeout=PROBE_TIMEOUT)
            if status == 200:
                return
            if status == 404 and probe == READINESS:
                probe = LIVENESS
                continue
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{url} did not become ready in {timeout:.0f}s")


@dataclass(eq=False)
class Replica:
    port: int
    process: asyncio.subprocess.Process
    started_at: float
    # Its Prometheus metrics, on a port of their own (eco2.metrics_port), as in a pod.
    metrics_port: int = 0
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    ready: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


class FunctionPool:
    def __init__(
        self,
        service: ServiceSpec,
        *,
        env: Mapping[str, str],
        cwd: Path,
        http: aiohttp.ClientSession,
        metrics: RunnerMetrics,
        log_dir: Path,
    ) -> None:
        self.service = service
        self._env = dict(env)
        self._cwd = cwd
        self._http = http
        self._metrics = metrics
        self._log_dir = log_dir
        self.replicas: list[Replica] = []
        self._starting: asyncio.Task[Replica] | None = None
        # Crash watchers, one per replica: kept here, or asyncio may collect a task nobody references.
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._rr = 0
        self.cold_starts = 0
        self.crashes = 0
        self.max_scale = service.max_scale or LOCAL_MAX_SCALE

    @property
    def name(self) -> str:
        return self.service.name

    async def ensure_min_scale(self) -> None:
        while not self._stopping and len(self.replicas) < self.service.min_scale:
            await self._start_replica()

    async def acquire(self) -> Replica:
        """A ready replica for one request; starts one when there are none (the request waits for it)."""
        ready = [r for r in self.replicas if r.ready]
        if not ready:
            replica = await self._start_once()
        else:
            replica = min(ready, key=lambda r: (r.inflight, self._rotation(r)))
            self._rr += 1
            busy = all(r.inflight >= self.service.target for r in ready)
            if busy and len(self.replicas) < self.max_scale and self._starting is None:
                self._starting = asyncio.create_task(self._start_replica())
                self._starting.add_done_callback(self._started)
        replica.inflight += 1
        replica.last_used = time.monotonic()
        return replica

    def release(self, replica: Replica) -> None:
        replica.inflight -= 1
        replica.last_used = time.monotonic()

    def _rotation(self, replica: Replica) -> int:
        return (self.replicas.index(replica) - self._rr) % max(1, len(self.replicas))

    async def _start_once(self) -> Replica:
        # Concurrent first events share one cold start instead of each spawning a process.
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_replica())
            self._starting.add_done_callback(self._started)
        return await asyncio.shield(self._starting)

    def _started(self, task: asyncio.Task[Replica]) -> None:
        if self._starting is task:
            self._starting = None

    async def _start_replica(self) -> Replica:
        spawn = time.perf_counter()
        port, metrics_port = free_port(), free_port()
        env, log_path = self._process_env(port, metrics_port), self._log_dir / f"{self.name}-{port}.log"
        process = await start_process(self.service.command, env=env, cwd=self._cwd, log_path=log_path)
        replica = Replica(port=port, process=process, started_at=time.monotonic(), metrics_port=metrics_port)
        self.replicas.append(replica)
        watcher = asyncio.create_task(self._watch(replica))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        try:
            await wait_healthy(self._http, replica.url, replica.process)
        except BaseException:
            await self._terminate(replica)
            raise
        replica.ready = True
        self.cold_starts += 1
        self._metrics.cold_start(self.name, time.perf_counter() - spawn)
        self._metrics.replicas.labels(self.name).set(len(self.replicas))
        log.info("replica up", extra={"fields": {"function": self.name, "port": port, "pid": process.pid}})
        return replica

    def _process_env(self, port: int, metrics_port: int) -> dict[str, str]:
        # The runner's local addresses (REDIS_URL, K_SINK, OPENAI_BASE_URL) win over the manifest's cluster ones; the
        # manifest's one metrics port would be every replica's on this one machine, so each gets its own.
        ports = {"PORT": str(port), "HOST": "127.0.0.1", "ECO2_METRICS_PORT": str(metrics_port)}
        env = {**os.environ, **self.service.env, **self._env, **ports}
        # Without bytecode every cold start compiles every import again (over a second); let the
        # function processes keep theirs (`__pycache__` is git-ignored; the venv is compiled by uv sync).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    async def _watch(self, replica: Replica) -> None:
        await replica.process.wait()
        if replica in self.replicas:
            self.replicas.remove(replica)
            self._metrics.replicas.labels(self.name).set(len(self.replicas))
            if not self._stopping and replica.ready:
                self.crashes += 1
                log.warning("replica exited", extra={"fields": {"function": self.name, "port": replica.port}})
                with contextlib.suppress(Exception):
                    await self.ensure_min_scale()

    async def reap_idle(self) -> None:
        """Stop replicas idle for the Service's window, never going below min-scale."""
        now = time.monotonic()
        for replica in sorted(self.replicas, key=lambda r: r.last_used):
            if len(self.replicas) <= self.service.min_scale:
                return
            if replica.ready and replica.inflight == 0 and now - replica.last_used >= self.service.idle_seconds:
                log.info("scaling down idle replica", extra={"fields": {"function": self.name}})
                await self._terminate(replica)

    async def _terminate(self, replica: Replica) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
        self._metrics.replicas.labels(self.name).set(len(self.replicas))
        if replica.process.returncode is None:
            replica.process.terminate()
            try:
                await asyncio.wait_for(replica.process.wait(), timeout=10)
            except TimeoutError:
                replica.process.kill()
                await replica.process.wait()

    async def stop(self) -> None:
        self._stopping = True
        if self._starting is not None:
            self._starting.cancel()
        await asyncio.gather(*(self._terminate(r) for r in list(self.replicas)), return_exceptions=True)
        await asyncio.gather(*self._watchers, return_exceptions=True)

    def snapshot(self) -> dict[str, Any]:
        return {
            "replicas": [
                {"url": r.url, "metrics": r.metrics_url, "pid": r.process.pid, "inflight": r.inflight, "ready": r.ready}
                for r in self.replicas
            ],
            "command": list(self.service.command),
            "min_scale": self.service.min_scale,
            "max_scale": self.max_scale,
            "target": self.service.target,
            "idle_seconds": self.service.idle_seconds,
            "cold_starts": self.cold_starts,
            "crashes": self.crashes,
        }
