"""A real Celery worker (`eco2 worker --celery`, gevent pool) and a real gateway (`eco2 serve gateway`) with
ECO2_RUNTIME=celery, on the machine's RabbitMQ and Redis; queues under this run's own prefix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from eco2.celery_runtime.config import CeleryConfig, consumers, delete_topology
from eco2_tools.bench.processes import Children
from tests.gateway.conftest import gateway_env
from tests.support import REDIS_TEST_URL, Child, free_port, start_child


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def received(self, task: str, task_id: str) -> int:
        """How often the worker took the task with this id off its queue (a retry is taken again)."""
        return self.log().count(f"Task eco2.{task}[{task_id}] received")


@pytest.fixture(scope="session")
def celery_env(stage_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    prefix = f"test-{uuid4().hex[:8]}"
    return {
        **stage_env,
        "ECO2_RUNTIME": "celery",
        "ECO2_CELERY_QUEUE_PREFIX": f"{prefix}.celery",
        # The seed's 10/60/300 s, shortened to the shortest Celery delays on quorum queues.
        "ECO2_CELERY_RETRY_DELAYS": "1,1,1",
        "ECO2_CELERY_RESULT_URL": REDIS_TEST_URL,
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('celery-db') / 'eco2.sqlite3'}",
        # The worker's vision refuses a model the gateway allows: the poison case.
        "ECO2_ALLOWED_MODELS": "gpt-4.1-mini",
        "ECO2_BLACKLIST_EXCHANGE": f"{prefix}.eco2.auth.blacklist",
        "ECO2_CATALOG_EXCHANGE": f"{prefix}.eco2.character.catalog",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def celery_config(celery_env: dict[str, str]) -> CeleryConfig:
    return CeleryConfig.from_env(celery_env)


@pytest.fixture(scope="session")
def worker(celery_env: dict[str, str], celery_config: CeleryConfig, child_log_dir: Path) -> Iterator[Worker]:
    children = Children(child_log_dir, nofile=4096)
    process = children.spawn(
        [sys.executable, "-m", "eco2_tools.cli", "worker", "--celery", "--concurrency", "20"],
        env={**os.environ, **celery_env},
        log_name="celery-worker",
    )
    worker = Worker(process, child_log_dir / "celery-worker.log")
    try:
        deadline = time.monotonic() + 30
        # Ready once every task's queue has the worker as its consumer.
        while not all(consumers(celery_config).values()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Celery worker did not start:\n{worker.log()}")
            time.sleep(0.1)
        yield worker
    finally:
        children.stop(process)
        delete_topology(celery_config)


@pytest.fixture(scope="session")
def celery_gateway(celery_env: dict[str, str], worker: Worker, child_log_dir: Path) -> Iterator[Child]:
    """`eco2 serve gateway` with ECO2_RUNTIME=celery: no K_SINK, its outbox publishes the chain."""
    port = free_port()
    standin = celery_env["OPENAI_BASE_URL"].removesuffix("/v1")
    env = gateway_env(
        "", **{**celery_env, "ECO2_ALLOWED_MODELS": "gpt-4.1-mini,gpt-4o-mini", "ECO2_IMAGE_URL_ALLOWLIST": standin}
    )
    child = start_child(["serve", "gateway", "--port", str(port)], port=port, env=env, log_dir=child_log_dir)
    yield child
    child.stop()
