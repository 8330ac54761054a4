"""The whole local pack (`eco2 up` in a child process) on throwaway ports, topology and Redis DB, for fault runs.

Delivery timings come from a copy of the manifests with the backoff delays and the model stages' budgets cut
down (at most PT2S: the model stages retry after 4, 8 and 16 s instead of 60, 120 and 240 s, rules and reward
keep PT1S; stage budgets 10 s), so that a fault run takes minutes, not hours; everything else is the
manifests as shipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from eco2.connections import amqp_connect, sync_redis
from eco2_tools.ha.cluster import HaSet
from eco2_tools.manifests import MANIFEST_DIRS
from tests.support import EVENT_TOKEN, ROOT, free_port

AMQP_URL = os.environ.get("ECO2_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
READY_TIMEOUT = 90.0


def fast_manifests(target: Path) -> Path:
    """The shipped manifests with retries spaced in seconds (at most PT2S) and model budgets of 10 s."""
    for directory in MANIFEST_DIRS:
        shutil.copytree(ROOT / directory, target / directory)
    for path in (target / "eventing").glob("*.yaml"):
        text = re.sub(r"backoffDelay: PT(\d+)S", lambda m: f"backoffDelay: PT{min(int(m[1]), 2)}S", path.read_text())
        path.write_text(text)
    for path in (target / "knative").glob("*.yaml"):
        text = re.sub(
            r'(name: ECO2_STAGE_TIMEOUT_SECONDS\n\s+value: )"\d+"', r'\1"10"', path.read_text(), flags=re.MULTILINE
        )
        path.write_text(text)
    return target


@dataclass
class Pack:
    """One `eco2 up` child and everything needed to reach it, kill parts of it and start it again."""

    workdir: Path
    redis_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    prefix: str = field(default_factory=lambda: f"fault-{uuid.uuid4().hex[:8]}")
    gateway_port: int = field(default_factory=free_port)
    ingress_port: int = field(default_factory=free_port)
    standin_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # The HA cases' own Redis Sentinel set and RabbitMQ cluster (torn down whole, with the run's topology).
    ha: HaSet | None = None
    amqp_url: str = AMQP_URL

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def standin(self) -> str:
        return f"http://127.0.0.1:{self.standin_port}"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.eco2.broker"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        return {
            **env,
            "REDIS_URL": self.redis_url,
            "AMQP_URL": self.amqp_url,
            "ECO2_ENV": "development",
            "ECO2_TOPOLOGY_PREFIX": self.prefix,
            "ECO2_GATEWAY_PORT": str(self.gateway_port),
            "ECO2_INGRESS_PORT": str(self.ingress_port),
            "ECO2_STANDIN_PORT": str(self.standin_port),
            "ECO2_S3_PORT": str(free_port()),
            "ECO2_STATE_DIR": str(self.state_dir),
            # The pack's sender credential: the case's own posts into the ingress present it (tests.support.SENDER).
            "ECO2_EVENT_TOKEN": EVENT_TOKEN,
            "ECO2_MANIFESTS": str(self.workdir / "manifests"),
            # Many scans from few users in seconds: the per-user limit is not what these runs test.
            "ECO2_RATE_LIMIT_BURST": "100000",
            "ECO2_RATE_LIMIT_PER_SECOND": "100000",
            "STANDIN_LATENCY_SCALE": "0.01",
            **self.env_extra,
        }

    def start(self) -> None:
        if self.starts == 0:
            fast_manifests(self.workdir / "manifests")
        self.starts += 1
        log = (self.workdir / f"runner-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eco2_tools.cli", "up"],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"eco2 up exited with {self.process.returncode}; see {self.workdir}")
            state = self.state()
            if state.get("ready") and state.get("pid") == (self.process.pid if self.process else None):
                try:
                    if httpx.get(f"{self.gateway}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"the pack was not ready within {READY_TIMEOUT:.0f} s; see {self.workdir}")

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.state_dir / "runner.json").read_text())
        except (OSError, ValueError):
            return {}
        return state

    def function_pids(self, *, include_gateway: bool = False) -> dict[int, str]:
        """pid → function name of every running function process."""
        pids: dict[int, str] = {}
        for name, pool in self.state().get("functions", {}).items():
            if name == "gateway" and not include_gateway:
                continue
            for replica in pool.get("replicas", []):
                pids[int(replica["pid"])] = name
        return pids

    def in_flight(self) -> int:
        """Jobs accepted and not ended yet (queued or running), read from this run's Redis DB."""
        return sum(status in ("queued", "running") for status in self.job_field("status"))

    def job_field(self, name: str) -> list[str | None]:
        """One field of every job in this run's Redis DB."""
        client = sync_redis(self.redis_url)
        try:
            jobs = [key for key in client.scan_iter("eco2:job:*", count=1000) if key.count(":") == 2]
            return [cast(str | None, client.hget(key, name)) for key in jobs]
        finally:
            client.close()

    def kill_runner(self) -> None:
        """SIGKILL the runner; its function processes die with it (PR_SET_PDEATHSIG)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def delete_topology(self) -> None:
        """Remove every queue and exchange of this run's prefix (they are its own); a cluster of the run's own goes
        whole."""
        if self.amqp_url != AMQP_URL:
            return
        connection = await amqp_connect(AMQP_URL)
        channel = await connection.channel()
        names = _topology_names(self.prefix)
        for queue in names["queues"]:
            await channel.queue_delete(queue)
        for exchange in names["exchanges"]:
            await channel.exchange_delete(exchange)
        await connection.close()


def _topology_names(prefix: str) -> dict[str, list[str]]:
    """This run's queues and exchanges, listed with rabbitmqctl (the management API may not be enabled)."""
    found: dict[str, list[str]] = {"queues": [], "exchanges": []}
    for kind, command in (("queues", "list_queues"), ("exchanges", "list_exchanges")):
        listed = subprocess.run(
            ["rabbitmqctl", "-q", command, "name"], capture_output=True, text=True, timeout=30, check=False
        )
        found[kind] = [line.strip() for line in listed.stdout.splitlines() if line.strip().startswith(prefix)]
    return found
