"""`eco2 up --manifests deploy/overlays/<name>`: the local pack runs from an overlay as kustomize renders it,
the cluster's addresses and the Secret's references replaced by this machine's servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary

from eco2.events import EventType, ScanRequested, new_event
from eco2.jobs import JobStore
from tests.support import ROOT, wait_for

DEV = ROOT / "deploy" / "overlays" / "dev"


async def test_one_scan_flows_through_the_pack_started_from_the_dev_overlay(
    start_pack: Callable[..., Any], redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(DEV, standin=True, extra_env={"STANDIN_LATENCY_SCALE": "0.01"})
    # The overlay's objects, not the bases': its namespace, its max-scale, its secretKeyRefs (not passed on).
    assert {doc.metadata.get("namespace") for doc in pack.manifests.documents} == {None, "eco2-dev"}
    assert pack.manifests.services["vision"].max_scale == 2
    assert "REDIS_URL" not in pack.manifests.services["gateway"].env
    store = JobStore(redis_client, ttl_seconds=3600)
    job_id = uuid.uuid4().hex
    await store.create(job_id, "user-1")
    scan = ScanRequested(job_id=job_id, user_id="user-1", image_url=f"{pack.model_url}/samples/aluminum_can.png")
    headers, body = to_binary(new_event(EventType.SCAN_REQUESTED, scan, source="/test", job_id=job_id))
    async with httpx.AsyncClient() as http:
        assert (await http.post(pack.ingress_url, headers=headers, content=body)).status_code == 202

    async def finished() -> bool:
        return await store.status(job_id) == "done"

    await wait_for(finished, timeout=60, what="the scan to finish")
    job = await store.get(job_id)
    assert job is not None
    assert json.loads(job["result"])["reward"]["name"] == "메탈리"


def test_up_takes_the_overlay_from_its_option(tmp_path: Path) -> None:
    # A broken overlay named by --manifests stops `eco2 up` with kustomize's message: the option reached the loader.
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - nowhere.yaml\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "ECO2_MANIFESTS"} | {"ECO2_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "eco2.cli", "up", "--manifests", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "manifest error" in result.stdout
    assert "nowhere.yaml" in result.stdout
