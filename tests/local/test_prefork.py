"""Function processes forked from the template process: their own environment, crash replacement, no orphans
when the runner is SIGKILLed, the fallback to fresh interpreters (template gone, ECO2_PREFORK=0)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from eco2.local.processes import ForkedProcess, Template
from eco2.local.replicas import FunctionPool, Replica
from eco2.local.runner import LocalPack, RunnerOptions
from tests.local.conftest import delete_topology, options, runner_env
from tests.local.test_runner import FIXTURES, FLAKY, flaky_manifests, send
from tests.support import ROOT, free_port, wait_for

ENV_NAMES = ["PORT", "HOST", "ECO2_ROOT", "ECO2_TEST_MARKER", "REDIS_URL", "K_SINK"]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (it holds no port and runs no code)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


async def seen_by_function(pack: LocalPack, redis_client: aioredis.Redis) -> dict[str, Any]:
    """Have the flaky function report its pid, working directory and environment."""
    event_id = await send(pack, "test.flaky", {"mode": "env", "names": ENV_NAMES})
    raw = await wait_for(lambda: redis_client.get(f"{FLAKY}:env:{event_id}"), timeout=30, what="the env report")
    seen: dict[str, Any] = json.loads(raw)
    return seen


async def one_ready_replica(pool: FunctionPool, *, other_than: int | None = None) -> Replica:
    async def ready() -> Replica | None:
        live = [r for r in pool.replicas if r.ready and r.process.pid != other_than]
        return live[0] if live else None

    replica: Replica = await wait_for(ready, timeout=30, what=f"a ready replica of {pool.name}")
    return replica


def template_of(pack: LocalPack) -> Template:
    assert pack.template is not None
    return pack.template


async def test_a_forked_function_serves_events_with_its_own_environment(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    manifests = flaky_manifests(tmp_path / "m", env={"ECO2_TEST_MARKER": "from-the-manifest"})
    pack: LocalPack = await start_pack(manifests)
    seen = await seen_by_function(pack, redis_client)
    replica = pack.pools["flaky"].replicas[0]
    template = template_of(pack)
    assert isinstance(replica.process, ForkedProcess)
    assert seen["pid"] == replica.process.pid
    assert parent_pid(seen["pid"]) == template.pid
    assert seen["cwd"] == str(ROOT)
    assert seen["env"] == {
        "PORT": str(replica.port),
        "HOST": "127.0.0.1",
        "ECO2_ROOT": str(FIXTURES),  # where this function is loaded from: read in the child, not the template
        "ECO2_TEST_MARKER": "from-the-manifest",
        "REDIS_URL": pack.options.redis_url,
        "K_SINK": pack.ingress_url,
    }
    template_env = Path(f"/proc/{template.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in template_env if v.startswith((b"PORT=", b"ECO2_TEST_MARKER=", b"K_SINK="))]


async def test_a_sigkilled_forked_replica_is_detected_and_replaced(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack: LocalPack = await start_pack(flaky_manifests(tmp_path / "m", min_scale=1))
    pool = pack.pools["flaky"]
    first = await one_ready_replica(pool)
    assert first.forked
    os.kill(first.process.pid, signal.SIGKILL)
    second = await one_ready_replica(pool, other_than=first.process.pid)
    assert second.forked
    assert first.process.returncode == -signal.SIGKILL
    assert pool.crashes == 1
    assert (await seen_by_function(pack, redis_client))["pid"] == second.process.pid


async def test_when_the_template_dies_its_replicas_are_replaced_by_fresh_interpreters(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack: LocalPack = await start_pack(flaky_manifests(tmp_path / "m", min_scale=1))
    pool = pack.pools["flaky"]
    first = await one_ready_replica(pool)
    template = template_of(pack)
    assert template.pid is not None
    os.kill(template.pid, signal.SIGKILL)  # its children get SIGTERM (PR_SET_PDEATHSIG)
    second = await one_ready_replica(pool, other_than=first.process.pid)
    assert not second.forked
    assert not template.available
    assert gone(first.process.pid)
    assert (await seen_by_function(pack, redis_client))["pid"] == second.process.pid


async def test_a_service_setting_an_import_time_variable_gets_a_fresh_interpreter(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    manifests = flaky_manifests(tmp_path / "m", env={"PYTHONWARNINGS": "ignore"})
    pack: LocalPack = await start_pack(manifests)
    await seen_by_function(pack, redis_client)
    assert not pack.pools["flaky"].replicas[0].forked
    assert template_of(pack).available


async def test_with_prefork_off_functions_start_as_fresh_interpreters(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack: LocalPack = await start_pack(flaky_manifests(tmp_path / "m"), prefork=False)
    seen = await seen_by_function(pack, redis_client)
    replica = pack.pools["flaky"].replicas[0]
    assert pack.template is None
    assert not replica.forked
    assert seen["env"]["PORT"] == str(replica.port)
    assert RunnerOptions.from_env(ROOT, {"ECO2_PREFORK": "0"}).prefork is False
    assert RunnerOptions.from_env(ROOT, {}).prefork is True


async def test_sigkill_of_the_runner_leaves_no_template_and_no_function_process(
    runner_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    manifests = flaky_manifests(tmp_path / "m", min_scale=1)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    runner = runner_process(manifests, runner_env(tmp_path / "state", prefix, free_port()))
    state_file = tmp_path / "state" / "runner.json"

    async def forked_replica_up() -> dict[str, Any] | None:
        if not state_file.exists():
            return None
        state: dict[str, Any] = json.loads(state_file.read_text())
        replicas = state["functions"]["flaky"]["replicas"]
        return state if any(r["forked"] and r["ready"] for r in replicas) else None

    state = await wait_for(forked_replica_up, timeout=40, what="the runner with a forked replica")
    pids = [state["template"]["pid"]] + [r["pid"] for f in state["functions"].values() for r in f["replicas"]]
    assert all(parent_pid(pid) in (runner.pid, state["template"]["pid"]) for pid in pids)
    runner.kill()
    runner.wait(timeout=10)

    async def all_gone() -> bool:
        return all(gone(pid) for pid in pids)

    await wait_for(all_gone, timeout=20, what=f"the template and function processes {pids} to exit")
    await delete_topology(LocalPack(options(tmp_path / "cleanup", manifests, prefix)))
