"""`eco2 up --manifests deploy/overlays/<name>`: the local pack runs from an overlay as kustomize renders it,
the cluster's addresses and the Secret's references replaced by this machine's servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from eco2.jobs import JobStore
from tests.local.conftest import one_scan
from tests.support import ROOT

DEV = ROOT / "deploy" / "overlays" / "dev"


async def test_one_scan_flows_through_the_pack_started_from_the_dev_overlay(
    start_pack: Callable[..., Any], redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(DEV, standin=True, extra_env={"STANDIN_LATENCY_SCALE": "0.01"})
    # The overlay's objects, not the bases': its namespace, its max-scale, its secretKeyRefs (not passed on).
    assert {doc.metadata.get("namespace") for doc in pack.manifests.documents} == {None, "eco2-dev"}
    assert pack.manifests.services["vision"].max_scale == 2
    assert "REDIS_URL" not in pack.manifests.services["gateway"].env
    _job_id, result = await one_scan(pack, JobStore(redis_client, ttl_seconds=3600))
    assert result["reward"]["name"] == "메탈리"


def test_up_takes_the_overlay_from_its_option(tmp_path: Path) -> None:
    # A broken overlay named by --manifests stops `eco2 up` with kustomize's message: the option reached the loader.
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - nowhere.yaml\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "ECO2_MANIFESTS"} | {"ECO2_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "eco2_tools.cli", "up", "--manifests", str(tmp_path)],
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
