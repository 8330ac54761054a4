"""`eco2 bench` at a few scans: both runtimes start, run every phase and stop; the JSON has every figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eco2_tools.bench.figures import FIGURES
from eco2_tools.local.replicas import free_port
from tests.support import REDIS_TEST_URL, ROOT


@pytest.mark.timeout(240)
def test_a_tiny_bench_reports_every_figure_for_both_runtimes(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REDIS_URL": REDIS_TEST_URL,
        "ECO2_TOPOLOGY_PREFIX": f"test-bench-{uuid.uuid4().hex[:8]}",
        **{f"ECO2_{name}_PORT": str(free_port()) for name in ("INGRESS", "GATEWAY", "STANDIN", "S3")},
    }
    tiny = ["--scans", "6", "--seed-scans", "3", "--warmup", "0", "--settle", "0.5", "--seed-scale", "0.05"]
    ran = subprocess.run(
        [sys.executable, "-m", "eco2_tools.cli", "bench", *tiny, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    results = json.loads((tmp_path / "bench.json").read_text())
    assert "error" not in results
    for runtime in ("pack", "celery"):
        measured = results["runtimes"][runtime]
        assert measured["zero_latency"]["done"] == 6, measured
        assert measured["seed"]["done"] == 3, measured
        assert measured["cpu"]["ms_per_scan_by_process"], "CPU read from /proc for its processes"
    rows = {row["figure"]: row for row in results["comparison"]}
    assert set(rows) == {figure.name for figure in FIGURES}
    for row in rows.values():
        assert row["pack"] is not None, row
        assert row["celery"] is not None, row
        assert row["pack_over_celery"] is not None, row
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pack ÷ Celery" in ran.stdout
    run_id = re.search(r"run ([0-9a-f]{8}):", ran.stdout)
    assert run_id is not None, ran.stdout[:2000]
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60)
    left = [name for name in listed.stdout.split() if name.startswith(f"bench-{run_id[1]}")]
    assert listed.returncode == 0, listed.stderr
    assert left == [], f"the run left its queues behind: {left[:5]}"
