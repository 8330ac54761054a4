"""Fixtures for the local runtime: packs started in-process on a throwaway topology, removed afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary

from eco2.events import EventType, ScanRequested, new_event
from eco2.jobs import JobStore
from eco2_tools.local import topology
from eco2_tools.local.runner import LocalPack, RunnerOptions
from tests.support import EVENT_TOKEN, REDIS_TEST_URL, ROOT, SENDER, free_port, wait_for

AMQP_URL = os.environ.get("ECO2_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The `runner_process` fixture: starts `eco2 up` on a manifest root with an environment.
RunnerProcess = Callable[[Path, dict[str, str]], subprocess.Popen[bytes]]


def options(tmp_path: Path, manifests: Path | None, prefix: str, **overrides: Any) -> RunnerOptions:
    settings: dict[str, Any] = {"standin": False, "storage": False, **overrides}
    return RunnerOptions(
        root=ROOT,
        manifests_dir=manifests,
        amqp_url=AMQP_URL,
        redis_url=REDIS_TEST_URL,
        ingress_port=free_port(),
        gateway_port=free_port(),
        standin_port=free_port(),
        s3_port=free_port(),
        prefix=prefix,
        state_dir=tmp_path / "state",
        reap_interval=0.2,
        event_token=EVENT_TOKEN,
        **settings,
    )


async def delete_topology(pack: LocalPack) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await topology.delete_topology(await connection.channel(), pack.manifests, pack.topology.prefix)
    finally:
        await connection.close()


@pytest.fixture
async def start_pack(tmp_path: Path, redis_client: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    packs: list[LocalPack] = []

    async def start(manifests: Path | None, **overrides: Any) -> LocalPack:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        pack = LocalPack(options(tmp_path / prefix, manifests, prefix, **overrides))
        packs.append(pack)
        await pack.start()
        return pack

    yield start
    for pack in packs:
        await pack.stop()
        await delete_topology(pack)


async def one_scan(pack: LocalPack, store: JobStore, sample: str = "aluminum_can") -> tuple[str, dict[str, Any]]:
    """A stand-in sample scan sent into the pack's broker ingress; its job id and final result once done."""
    job_id = uuid.uuid4().hex
    await store.create(job_id, "user-1")
    scan = ScanRequested(job_id=job_id, user_id="user-1", image_url=f"{pack.model_url}/samples/{sample}.png")
    headers, body = to_binary(new_event(EventType.SCAN_REQUESTED, scan, source="/test", job_id=job_id))
    async with httpx.AsyncClient() as http:
        assert (await http.post(pack.ingress_url, headers=dict(headers) | SENDER, content=body)).status_code == 202

    async def finished() -> bool:
        return await store.status(job_id) == "done"

    await wait_for(finished, timeout=60, what="the scan to finish")
    job = await store.get(job_id)
    assert job is not None
    result: dict[str, Any] = json.loads(job["result"])
    return job_id, result


def runner_env(state_dir: Path, prefix: str, ingress_port: int) -> dict[str, str]:
    """The environment of an `eco2 up` in a child process, on the test servers and a throwaway topology."""
    return {
        "REDIS_URL": REDIS_TEST_URL,
        "AMQP_URL": AMQP_URL,
        "ECO2_TOPOLOGY_PREFIX": prefix,
        "ECO2_INGRESS_PORT": str(ingress_port),
        "ECO2_GATEWAY_PORT": str(free_port()),
        "ECO2_S3_PORT": str(free_port()),
        "ECO2_STATE_DIR": str(state_dir),
        "ECO2_EVENT_TOKEN": EVENT_TOKEN,
        "OPENAI_API_KEY": "not-used",  # no stand-in needed
    }


@pytest.fixture
def runner_process(tmp_path: Path) -> Iterator[RunnerProcess]:
    """`eco2 up` in a child process; stopped with Ctrl-C (SIGINT) at the end if a test left it running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(manifests: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (tmp_path / f"runner-{len(started)}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "eco2_tools.cli", "up"],
                cwd=ROOT,
                env={**os.environ, **env, "ECO2_MANIFESTS": str(manifests)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
