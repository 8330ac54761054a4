"""The two runtimes as the bench starts them: the pack exactly as `eco2 up` starts it, and a Celery fleet of
one worker per stage (the seed's layout: a queue per stage, gevent pool), with the same stand-in model.

Both take scans the same way, straight into their broker: the pack's through its ingress (K_SINK, a POST of
eco2.scan.requested), the fleet's by publishing the chain; the job is created in Redis first, as the gateway
does, so the stages record progress and the bench reads `done` from the same job store.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from eco2.connections import amqp_connect
from eco2.gateway.sink import EventSink
from eco2.sender_auth import SenderCredential
from eco2.serving import project_root
from eco2.sink import Sink
from eco2_tools.bench.processes import Children
from eco2_tools.bench.procs import Proc, services, tree
from eco2_tools.local.replicas import free_port
from eco2_tools.local.runner import RunnerOptions
from eco2_tools.local.topology import delete_topology
from eco2_tools.manifests import Manifests

# One worker per stage, as the seed deployed its Celery fleet; reward and persist share one (both cheap).
FLEET: tuple[str, ...] = ("vision", "rules", "answer", "reward,persist")
READY_TIMEOUT = 120.0


class RuntimeFailed(RuntimeError):
    pass


@dataclass
class Runtime:
    name: str
    sink: Callable[[], Sink]  # built inside the bench's event loop (aiohttp wants the running loop)
    standin_url: str
    roots: list[int]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def processes(self) -> list[Proc]:
        """This runtime's own processes now (the stand-in and the S3 emulator are labelled, and left out of sums)."""
        return tree(self.roots)

    def with_services(self) -> list[Proc]:
        return self.processes() + services()

    def set_latency(self, scale: float) -> None:
        """The stand-in's latency: 0 (a zero-latency model) or 1 (the seed's 3.5 s vision, 7 s answer)."""
        httpx.post(
            f"{self.standin_url}/v1/standin/config", json={"latency_scale": scale}, timeout=10
        ).raise_for_status()


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    return {**base, **extra, "LOG_LEVEL": "WARNING"}


def start_pack(env: dict[str, str], state_dir: Path, run_id: str) -> Runtime:
    """`eco2 up --detach` with this run's topology prefix and state dir; its stand-in at zero latency."""
    env = _env(
        env,
        ECO2_STATE_DIR=str(state_dir),
        ECO2_TOPOLOGY_PREFIX=f"bench-{run_id}",
        STANDIN_LATENCY_SCALE="0",
    )
    up = subprocess.run(
        [sys.executable, "-m", "eco2_tools.cli", "up", "--detach"],
        cwd=project_root(),
        env=env,
        capture_output=True,
        timeout=READY_TIMEOUT,
        check=False,
    )
    if up.returncode != 0:
        raise RuntimeFailed(f"eco2 up failed: {up.stdout.decode()[-2000:]} {up.stderr.decode()[-2000:]}")
    state = json.loads((state_dir / "runner.json").read_text())
    ingress = f"http://127.0.0.1:{env.get('ECO2_INGRESS_PORT', '8081')}"
    standin = f"http://127.0.0.1:{env.get('ECO2_STANDIN_PORT', '8090')}"
    # The bench's sends present the pack's sender credential, as the gateway's do.
    credential = SenderCredential(token=state.get("event_token") or None)
    sink = lambda: EventSink(ingress, timeout_seconds=30, credential=credential)  # noqa: E731
    return Runtime("pack", sink, standin, [int(state["pid"])])


async def stop_pack(env: dict[str, str], state_dir: Path, run_id: str) -> None:
    """`eco2 down`, then this run's throwaway topology deleted (its queues would otherwise pile up on the node)."""
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "eco2_tools.cli", "down"],
        cwd=project_root(),
        env=_env(env, ECO2_STATE_DIR=str(state_dir)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    connection = await amqp_connect(env.get("AMQP_URL") or RunnerOptions.amqp_url, env=env)
    try:
        await delete_topology(await connection.channel(), Manifests.load(project_root()), f"bench-{run_id}")
    finally:
        await connection.close()


def start_fleet(env: dict[str, str], children: Children, run_id: str, concurrency: int) -> Runtime:
    """The stand-in and one `eco2 worker --celery` per stage, on this run's own queues."""
    from eco2.celery_runtime.submit import CelerySink

    port = free_port()
    env = _env(
        env,
        ECO2_CELERY_QUEUE_PREFIX=fleet_prefix(run_id),
        OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
        # The stand-in serves the sample images on loopback: allowed by name, as `eco2 up` allows it for the pack.
        ECO2_IMAGE_URL_ALLOWLIST=f"http://127.0.0.1:{port}",
        DATABASE_URL=f"sqlite:///{children.log_dir / 'celery.sqlite3'}",
        STANDIN_LATENCY_SCALE="0",
    )
    cli = [sys.executable, "-m", "eco2_tools.cli"]
    started = [children.spawn([*cli, "model-standin", "--port", str(port)], env=env, log_name="standin")]
    for queues in FLEET:
        command = ["worker", "--celery", f"--queues={queues}", f"--concurrency={concurrency}"]
        started.append(children.spawn([*cli, *command], env=env, log_name=f"worker-{queues}"))
    standin = f"http://127.0.0.1:{port}"
    _wait_ready(env, standin, started)
    return Runtime(
        "celery", lambda: CelerySink.from_env(env, timeout_seconds=30), standin, [p.pid for p in started], started
    )


def fleet_prefix(run_id: str) -> str:
    return f"bench-{run_id}.celery"


def _wait_ready(env: dict[str, str], standin: str, started: list[subprocess.Popen[bytes]]) -> None:
    """Every stage's queue has its worker consuming, and the stand-in answers."""
    from eco2.celery_runtime.config import TASKS, CeleryConfig, consumers

    config = CeleryConfig.from_env(env)
    wanted = tuple(task for task in TASKS if any(task in queues.split(",") for queues in FLEET))
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in started):
            raise RuntimeFailed("a Celery worker or the stand-in exited at start: see the bench's logs")
        if all(consumers(config, wanted).values()) and _answers(standin):
            return
        time.sleep(0.2)
    raise RuntimeFailed(f"the Celery fleet was not ready within {READY_TIMEOUT:.0f}s")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def stop_fleet(runtime: Runtime, children: Children, env: dict[str, str], run_id: str) -> None:
    from eco2.celery_runtime.config import CeleryConfig, delete_topology

    for process in runtime.started:
        children.stop(process)
    delete_topology(CeleryConfig.from_env({**env, "ECO2_CELERY_QUEUE_PREFIX": fleet_prefix(run_id)}))
