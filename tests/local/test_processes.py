"""Function processes as a Knative pod runs them: the manifest's container command in a fresh interpreter, with
its own environment and nothing imported beyond the function; readiness on /readyz; crash replacement; no
orphans when the runner is SIGKILLed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from eco2_tools.local.client import runner_session
from eco2_tools.local.processes import CommandNotFound, container_command
from eco2_tools.local.replicas import FunctionPool, Replica, wait_healthy
from eco2_tools.local.runner import LocalPack
from tests.local.conftest import delete_topology, options, runner_env
from tests.local.test_runner import FIXTURES, FLAKY, flaky_manifests, send
from tests.support import ROOT, free_port, http_server, wait_for

ENV_NAMES = ["PORT", "HOST", "ECO2_ROOT", "ECO2_TEST_MARKER", "REDIS_URL", "K_SINK"]
VENV_ECO2 = str(Path(sys.executable).parent / "eco2")
STAGES = ["rules", "reward", "dead-letter", "vision", "answer"]
# Dev-only code and the CLI framework (click itself comes with uvicorn and Flask): a function must not pay for them.
NOT_IN_A_FUNCTION = [
    "typer",
    "rich",
    "eco2_tools.local",
    "eco2_tools.manifests",
    "eco2_tools.standin",
    "eco2_tools.gateway_cli",
    "yaml",
]
GATEWAY_ONLY = ["jwt", "cryptography.hazmat", "eco2.gateway"]


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")


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


def modules_loaded_serving(name: str) -> set[str]:
    """What a fresh interpreter has imported once `eco2 serve NAME` has loaded the function (before serving)."""
    script = (
        "import sys\n"
        "name = sys.argv[1]\n"
        "sys.argv = ['eco2', 'serve', name]\n"
        "import eco2_tools.cli, uvicorn\n"
        "from eco2 import serving\n"
        "serving.load_function(name)\n"
        "print('\\n'.join(sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(run.stdout.split())


def loaded(modules: set[str], prefixes: list[str]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in prefixes))


async def test_a_function_process_is_the_manifests_command_with_its_own_environment(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    manifests = flaky_manifests(tmp_path / "m", env={"ECO2_TEST_MARKER": "from-the-manifest"})
    pack: LocalPack = await start_pack(manifests)
    seen = await seen_by_function(pack, redis_client)
    replica = pack.pools["flaky"].replicas[0]
    assert seen["pid"] == replica.process.pid
    assert parent_pid(seen["pid"]) == os.getpid()
    # `eco2 serve flaky`, the venv's console script run by its interpreter (the shebang): what a pod runs.
    assert command_line(seen["pid"])[1:] == [VENV_ECO2, "serve", "flaky"]
    assert pack.snapshot()["functions"]["flaky"]["command"] == ["eco2", "serve", "flaky"]
    assert seen["cwd"] == str(ROOT)
    assert seen["env"] == {
        "PORT": str(replica.port),
        "HOST": "127.0.0.1",
        "ECO2_ROOT": str(FIXTURES),
        "ECO2_TEST_MARKER": "from-the-manifest",
        "REDIS_URL": pack.options.redis_url,
        "K_SINK": pack.ingress_url,
        "ECO2_EVENT_TOKEN": pack.event_token,
    }


@pytest.mark.parametrize("name", STAGES)
def test_eco2_serve_imports_no_cli_framework_and_no_dev_code(name: str) -> None:
    modules = modules_loaded_serving(name)
    assert "eco2.stages" in modules or "eco2.functions.dead_letter" in modules
    assert loaded(modules, NOT_IN_A_FUNCTION + GATEWAY_ONLY) == []
    # The openai SDK is imported when a model client is built, never by loading a function; jsonschema only
    # checks a rule directory other than the package's (whose files the tests check).
    assert loaded(modules, ["openai", "jsonschema"]) == []


def test_eco2_serve_replay_loads_no_http_client_until_it_sends() -> None:
    # Most ticks find nothing to replay: httpx is imported by the first send, not by loading the function.
    assert loaded(modules_loaded_serving("replay"), ["httpx"]) == []


def test_eco2_serve_gateway_imports_no_cli_framework_and_no_dev_code() -> None:
    assert loaded(modules_loaded_serving("gateway"), NOT_IN_A_FUNCTION) == []


def test_the_program_of_a_container_command_is_found_beside_the_interpreter_then_on_path() -> None:
    assert container_command(("eco2", "serve", "rules")) == [VENV_ECO2, "serve", "rules"]
    assert container_command(("sh", "-c", "true"))[0] in ("/bin/sh", "/usr/bin/sh")
    with pytest.raises(CommandNotFound):
        container_command(("no-such-program-eco2", "serve"))
    with pytest.raises(CommandNotFound):
        container_command(())


class Stopped:
    returncode: int | None = None


Handler = Callable[[web.Request], Awaitable[web.Response]]


def probe_server(readyz: list[int], *, first_delay: float = 0.0) -> tuple[Handler, list[str]]:
    """A handler answering /readyz with the statuses given in turn (then 200), /healthz 200; the first answer
    after `first_delay` seconds. The paths asked, in order."""
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.path)
        if len(asked) == 1:
            await asyncio.sleep(first_delay)
        if request.path == "/readyz":
            return web.Response(status=readyz.pop(0) if readyz else 200)
        return web.Response(status=200)

    return answer, asked


async def test_a_new_replica_is_ready_only_once_readyz_answers_200() -> None:
    answer, asked = probe_server([503, 503, 503])
    async with http_server(answer) as url, runner_session() as http:
        await wait_healthy(http, url, Stopped(), timeout=5)
    assert asked == ["/readyz"] * 4


async def test_without_readyz_a_new_replica_is_ready_once_healthz_answers_200() -> None:
    answer, asked = probe_server([404])
    async with http_server(answer) as url, runner_session() as http:
        await wait_healthy(http, url, Stopped(), timeout=5)
    assert asked == ["/readyz", "/healthz"]


async def test_a_probe_unanswered_within_its_second_is_asked_again() -> None:
    answer, asked = probe_server([], first_delay=1.5)
    async with http_server(answer) as url, runner_session() as http:
        started = time.monotonic()
        await wait_healthy(http, url, Stopped(), timeout=10)
    # Given up on after its second (an answer at 1.5 s would have been the only one), then asked again.
    assert asked == ["/readyz", "/readyz"]
    assert time.monotonic() - started >= 1.0


async def test_waiting_for_a_process_that_exits_fails_at_once_naming_its_status() -> None:
    exiting = subprocess.Popen([sys.executable, "-S", "-c", "raise SystemExit(3)"])  # a Popen nobody polls
    async with runner_session() as http:  # nothing listens on the port: every probe is refused
        with pytest.raises(RuntimeError, match="exited with 3"):
            await wait_healthy(http, f"http://127.0.0.1:{free_port()}", exiting, timeout=20)


async def test_a_sigkilled_replica_is_detected_and_replaced(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack: LocalPack = await start_pack(flaky_manifests(tmp_path / "m", min_scale=1))
    pool = pack.pools["flaky"]
    first = await one_ready_replica(pool)
    os.kill(first.process.pid, signal.SIGKILL)
    second = await one_ready_replica(pool, other_than=first.process.pid)
    assert first.process.returncode == -signal.SIGKILL
    assert pool.crashes == 1
    assert (await seen_by_function(pack, redis_client))["pid"] == second.process.pid


async def with_a_ready_replica(state_file: Path) -> dict[str, Any]:
    """The state a runner wrote once the flaky function has a ready replica (its min-scale 1)."""

    async def replica_up() -> dict[str, Any] | None:
        if not state_file.exists():
            return None
        state: dict[str, Any] = json.loads(state_file.read_text())
        return state if any(r["ready"] for r in state["functions"]["flaky"]["replicas"]) else None

    ready: dict[str, Any] = await wait_for(replica_up, timeout=40, what="the runner with a ready replica")
    return ready


async def test_sigkill_of_the_runner_leaves_no_function_process(
    runner_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    manifests = flaky_manifests(tmp_path / "m", min_scale=1)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    runner = runner_process(manifests, runner_env(tmp_path / "state", prefix, free_port()))
    state = await with_a_ready_replica(tmp_path / "state" / "runner.json")
    pids = [r["pid"] for f in state["functions"].values() for r in f["replicas"]]
    assert pids
    assert all(parent_pid(pid) == runner.pid for pid in pids)
    runner.kill()
    runner.wait(timeout=10)

    async def all_gone() -> bool:
        return all(gone(pid) for pid in pids)

    await wait_for(all_gone, timeout=20, what=f"the function processes {pids} to exit")
    await delete_topology(LocalPack(options(tmp_path / "cleanup", manifests, prefix)))


def imported(importtime_log: str) -> set[str]:
    """The modules a process imported, from its `-X importtime` lines ("import time: self | cumulative | name")."""
    lines = (line.split("|") for line in importtime_log.splitlines() if line.startswith("import time:"))
    return {fields[2].strip() for fields in lines if len(fields) == 3}


async def test_the_runner_imports_no_httpx_from_start_to_stop(
    runner_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    # All of the runner's HTTP is one aiohttp session (eco2_tools.local.client): httpx (and the rich, click and
    # pygments its CLI pulls in) would be ~7 MB of a runner at rest for nothing. `eco2 up` as it is run, through
    # a replica's cold start and readiness probes, the S3 emulator's start-up check, and a stop.
    manifests = flaky_manifests(tmp_path / "m", min_scale=1)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = {**runner_env(tmp_path / "state", prefix, free_port()), "PYTHONPROFILEIMPORTTIME": "1"}
    runner = runner_process(manifests, env)
    try:
        state = await with_a_ready_replica(tmp_path / "state" / "runner.json")
        assert state["storage"], "the S3 emulator was started (and waited for)"
        runner.send_signal(signal.SIGINT)
        assert runner.wait(timeout=30) == 0
    finally:
        await delete_topology(LocalPack(options(tmp_path / "cleanup", manifests, prefix)))
    modules = imported((tmp_path / "runner-0.log").read_text(errors="replace"))
    assert {"eco2_tools.local.runner", "aiohttp"} <= modules, "the log holds the runner's imports"
    assert loaded(modules, ["httpx", "httpcore"]) == []
