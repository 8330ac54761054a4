"""SIGTERM in the middle of a delivery: a real `eco2 serve vision` finishes it, answers it, and exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import from_http

from eco2.events import EventType
from eco2.jobs import JobStore
from eco2.serving import load_function
from tests.functions.test_stage_functions import requested
from tests.support import REDIS_TEST_URL, Child, free_port, start_child, wait_for

MODEL_SECONDS = 1.0  # the stand-in's vision call: long enough to signal the process while it is in flight


@pytest.fixture(scope="module")
def slow_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Child]:
    port = free_port()
    child = start_child(
        ["model-standin", "--port", str(port)],
        port=port,
        env={"STANDIN_VISION_LATENCY": str(MODEL_SECONDS), "STANDIN_LATENCY_SCALE": "1"},
        log_dir=tmp_path_factory.mktemp("standin"),
    )
    yield child
    child.stop()


@pytest.fixture
def vision(slow_standin: Child, tmp_path: Path) -> Iterator[Child]:
    port = free_port()
    env = {
        "REDIS_URL": REDIS_TEST_URL,
        "OPENAI_BASE_URL": f"{slow_standin.url}/v1",
        "ECO2_IMAGE_URL_ALLOWLIST": slow_standin.url,
        "ECO2_SHUTDOWN_GRACE_SECONDS": "20",
    }
    child = start_child(["serve", "vision", "--port", str(port)], port=port, env=env, log_dir=tmp_path)
    yield child
    child.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def _model_calls(http: httpx.AsyncClient, standin: Child, job_id: str) -> int:
    stats = (await http.get(f"{standin.url}/v1/standin/stats")).json()
    return int(stats["by_job"].get(job_id, {}).get("vision", 0))


async def test_sigterm_mid_delivery_finishes_it_answers_it_and_exits_zero(
    vision: Child, slow_standin: Child, store: JobStore, http: httpx.AsyncClient
) -> None:
    event = requested(slow_standin.url)
    job_id = event["subject"]
    await store.create(job_id, "user-1")
    headers, body = to_binary(event)
    delivery = asyncio.create_task(http.post(vision.url, headers=headers, content=body))

    async def model_call_in_flight() -> bool:
        return await _model_calls(http, slow_standin, job_id) == 1

    await wait_for(model_call_in_flight, timeout=10, what="vision's model call to start")
    vision.process.send_signal(signal.SIGTERM)

    # Draining: nothing new is taken (the listener is closed, or readiness says 503) while the delivery runs.
    async def not_ready() -> bool:
        try:
            return (await http.get(f"{vision.url}/readyz", timeout=1)).status_code == 503
        except httpx.TransportError:
            return True

    await wait_for(not_ready, timeout=5, what="the draining replica to stop taking requests")
    assert not delivery.done(), "the delivery should still be in flight when the replica stops taking requests"

    response = await delivery
    assert response.status_code == 200, response.text
    assert from_http(dict(response.headers), response.content)["type"] == EventType.SCAN_CLASSIFIED
    assert await asyncio.to_thread(vision.process.wait, 20) == 0, vision.log()
    assert "stopped on SIGTERM" in vision.log()

    stages = [e.stage for e in await store.events(job_id, count=100) if e.status != "delta"]
    assert stages.count("vision") == 1, stages
    assert await _model_calls(http, slow_standin, job_id) == 1  # no second model call


async def test_a_draining_function_refuses_new_deliveries_with_a_retryable_503(http: httpx.AsyncClient) -> None:
    app, function = load_function("rules")
    function.drain()  # type: ignore[attr-defined]  # EventFunction's; eco2.serving calls it on SIGTERM
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rules") as client:
        ready = await client.get("/readyz")
        headers, body = to_binary(requested("http://standin", job_id=uuid.uuid4().hex))
        delivery = await client.post("/", headers=headers, content=body)
    assert (ready.status_code, ready.json()["status"]) == (503, "draining")
    assert (delivery.status_code, delivery.json()["error"]) == (503, "shutting_down")


def test_a_stopped_serve_process_without_work_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    child = start_child(
        ["serve", "rules", "--port", str(port)], port=port, env={"REDIS_URL": REDIS_TEST_URL}, log_dir=tmp_path
    )
    child.process.send_signal(signal.SIGTERM)
    try:
        assert child.process.wait(timeout=20) == 0, child.log()
    except subprocess.TimeoutExpired:
        child.stop()
        raise
