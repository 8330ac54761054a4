"""`eco2 up / status / down`: run the local pack in the foreground or detached, and report on it.

`eco2 status` says how fresh what it shows is: whether the runner reached RabbitMQ and Redis at its last
check and when that was, how old the state file and the queue depths are (depths kept from before an outage
are shown with their age, never as current), and the dead letters recorded in Redis (count by function and
reason, newest first), which the dead-letter queues' depth cannot show since they are drained at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from eco2 import keys
from eco2.connections import amqp_connect, sync_redis
from eco2.observability import configure_logging
from eco2_tools.local.dead_letter_report import read_dead_letters
from eco2_tools.local.dependencies import DependencyMissing
from eco2_tools.local.runner import LocalPack, RunnerOptions, run_until_stopped
from eco2_tools.local.topology import delete_topology, topology_names
from eco2_tools.manifests import ManifestError, Manifests

console = Console()
# A state file older than this means the runner is not writing it: stuck, or its event loop is blocked.
STALE_AFTER = 5.0


def read_state(options: RunnerOptions) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(options.state_path.read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(int(state.get("pid", 0))) else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def up_foreground(options: RunnerOptions) -> int:
    if read_state(options) is not None:
        console.print("[yellow]the pack is already running[/]; `eco2 status` shows it, `eco2 down` stops it")
        return 1
    try:
        pack = LocalPack(options)
    except ManifestError as exc:
        console.print(f"[red]manifest error:[/] {exc}")
        return 2
    configure_runner_logging(os.environ.get("LOG_LEVEL") or "INFO")
    return asyncio.run(_serve(pack))


def configure_runner_logging(level: str) -> None:
    """JSON lines on stderr (`.eco2/runner.log` when detached), as the functions log: retries, requeues, dead
    letters and housekeeping failures with their fields. Not one line per HTTP delivery (aiohttp's client logs
    none)."""
    configure_logging("eco2-runner", level.upper())


async def _serve(pack: LocalPack) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = asyncio.create_task(run_until_stopped(pack, stop))
    while not runner.done() and not pack.options.state_path.exists():
        await asyncio.sleep(0.05)
    if not runner.done():
        print_status(pack.snapshot() | {"ready": True, "queues": {}})
        console.print("[dim]Ctrl-C stops it; in-flight deliveries finish or are redelivered next time.[/]")
    try:
        await runner
    except DependencyMissing as exc:
        console.print(f"[red]{exc}[/]")
        return 3
    except (OSError, RuntimeError, TimeoutError) as exc:
        # A taken port, a function that cannot start: say what, without a traceback.
        console.print(f"[red]the pack could not start:[/] {exc}")
        return 1
    console.print("stopped")
    return 0


def up_detached(options: RunnerOptions, timeout: float = 60.0) -> int:
    if read_state(options) is not None:
        console.print("already running:")
        print_status(read_state(options) or {})
        return 0
    log_path = options.state_path.parent / "runner.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "eco2_tools.cli", "up"],
            cwd=options.root,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(options)
        if state is not None and state.get("ready"):
            print_status(state)
            return 0
        if process.poll() is not None:
            console.print(f"[red]the pack did not start[/] (exit {process.returncode}); its log, {log_path}:")
            console.print(log_path.read_text(errors="replace")[-3000:])
            return 1
        time.sleep(0.1)
    console.print(f"[red]the pack was not ready after {timeout:.0f}s[/]; see {log_path}")
    return 1


def down(options: RunnerOptions, timeout: float = 30.0, *, purge: bool = False) -> int:
    """Stop the runner; then say what stays on RabbitMQ, or with `purge` remove it."""
    state = read_state(options)
    if state is None:
        console.print("the pack is not running")
    else:
        _stop(int(state["pid"]), timeout)
    manifests = Manifests.load(options.manifests_dir or options.root)
    if purge:
        removed = asyncio.run(_purge(options, manifests))
        console.print(f"removed the pack's {removed} queues and its exchanges (prefix {options.prefix!r})")
        return 0
    queues, _ = topology_names(manifests, options.prefix)
    console.print(
        f"the pack's {len(queues)} queues and its exchanges (prefix {options.prefix!r}) stay on RabbitMQ with"
        " any event not yet delivered, for the next `eco2 up`; `eco2 down --purge` removes them"
    )
    return 0


async def _purge(options: RunnerOptions, manifests: Manifests) -> int:
    connection = await amqp_connect(options.amqp_url)
    async with connection:
        return await delete_topology(await connection.channel(), manifests, options.prefix)


def _stop(pid: int, timeout: float) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        console.print(f"[yellow]runner {pid} still running after {timeout:.0f}s; sending SIGKILL[/]")
        os.kill(pid, signal.SIGKILL)
    console.print("stopped")


def health(state: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Reachability and the age of every figure, as of now (the state file holds timestamps, not ages)."""
    now = time.time() if now is None else now

    def age(at: object) -> float | None:
        return round(now - at, 1) if isinstance(at, int | float) else None

    def probe(raw: object) -> dict[str, Any]:
        info = raw if isinstance(raw, dict) else {}
        return {
            "reachable": bool(info.get("reachable")),
            # RabbitMQ's memory or disk alarm blocks the runner's publishes (reachable, but nothing is published).
            "blocked": bool(info.get("blocked")),
            "checked_age_seconds": age(info.get("checked_at")),
            "error": info.get("error") if isinstance(raw, dict) else "not reported by this runner",
        }

    raw_queues = state.get("queues_read")
    queues: dict[str, Any] = raw_queues if isinstance(raw_queues, dict) else {}
    broker, redis = probe(state.get("broker_health")), probe(state.get("redis_health"))
    state_age = age(state.get("updated_at"))
    return {
        "healthy": broker["reachable"]
        and not broker["blocked"]
        and redis["reachable"]
        and state_age is not None
        and state_age < STALE_AFTER,
        "state_age_seconds": state_age,
        "broker": broker,
        "redis": redis,
        "queues_read": {
            "ok": bool(queues.get("ok")),
            "age_seconds": age(queues.get("read_at")),
            "error": queues.get("error"),
        },
        "functions_age_seconds": age(state.get("functions_read_at", state.get("updated_at"))),
    }


def _print_health(report: dict[str, Any]) -> None:
    for name in ("broker", "redis"):
        probe = report[name]
        checked = f"(checked {probe['checked_age_seconds']}s ago)"
        if probe["blocked"]:
            console.print(f"  {name:<8} [red]BLOCKED[/] by a memory or disk alarm: publishes wait {checked}")
        elif probe["reachable"]:
            console.print(f"  {name:<8} reachable {checked}")
        else:
            console.print(f"  {name:<8} [red]UNREACHABLE[/] {probe['error'] or ''} {checked}")
    age = report["state_age_seconds"]
    if age is None or age >= STALE_AFTER:
        console.print(f"  [red]state written {age}s ago: the runner is not updating it; the figures below are old[/]")
    queues = report["queues_read"]
    if not queues["ok"]:
        read = f"queue depths below were read {queues['age_seconds']}s ago"
        console.print(f"  [yellow]{read}[/]; the last read failed: {queues['error']}")


def _print_dead_letters(letters: dict[str, Any]) -> None:
    if letters.get("error"):
        console.print(f"  [yellow]dead letters: cannot read them from Redis ({letters['error']})[/]")
        return
    if not letters.get("total"):
        console.print("  dead letters: none recorded")
        return
    where = f"Redis streams {keys.dead_letters('<domain>')}; newest first; `eco2 dlq list` for each letter"
    console.print(f"  [red]dead letters: {letters['total']} recorded[/] ({where})")
    table = Table("function", "reason", "count", "newest")
    now = time.time()
    for group in letters.get("groups", []):
        table.add_row(group["function"], group["reason"], str(group["count"]), f"{now - group['newest_at']:.0f}s ago")
    console.print(table)


def print_status(
    state: dict[str, Any], dead_letters: dict[str, Any] | None = None, budgets: list[dict[str, Any]] | None = None
) -> None:
    console.print(f"[bold]Eco² pack[/] (runner pid {state.get('pid')})")
    console.print(f"  redis    {state.get('redis')}")
    console.print(f"  rabbitmq {state.get('amqp')}")
    console.print(f"  ingress  {state.get('ingress')}  (K_SINK: POST CloudEvents here)")
    if state.get("gateway"):
        console.print(f"  gateway  {state.get('gateway')}")
    model = state.get("model")
    if model:
        tag = " [yellow](STAND-IN model server, not a real model)[/]" if state.get("model_is_standin") else ""
        console.print(f"  model    {model}{tag}")
    if "updated_at" in state:
        _print_health(health(state))
    table = Table("function", "replicas", "scale", "urls", "cold starts")
    for name, info in sorted(state.get("functions", {}).items()):
        urls = ", ".join(r["url"] for r in info.get("replicas", [])) or "(scaled to zero)"
        table.add_row(
            name,
            str(len(info.get("replicas", []))),
            f"{info.get('min_scale')}..{info.get('max_scale')}",
            urls,
            str(info.get("cold_starts", 0)),
        )
    console.print(table)
    queues = state.get("queues") or {}
    if queues:
        print_queue_depths(queues)
    if dead_letters is not None:
        _print_dead_letters(dead_letters)
    for budget in budgets or []:
        paused = f", [yellow]paused {budget['paused_for']:.1f}s more[/]" if budget["paused_for"] > 0 else ""
        limit = budget["limit"] or "no cap"
        rate = f", one request every {budget['interval_ms']:.0f} ms" if budget["interval_ms"] else ""
        console.print(
            f"  model budget {budget['model']}: {budget['in_flight']} / {limit} in flight, "
            f"{budget['queued']} queued{rate}{paused}"
        )


def print_queue_depths(queues: dict[str, int]) -> None:
    """The queues holding messages, and how many are empty: among the pack's 64 trigger and dead-letter queues
    (ten shards per model stage) a row of zeros each would hide the one that matters. `--json` lists them all."""
    busy = {name: count for name, count in queues.items() if count}
    if not busy:
        console.print(f"queues: {len(queues)}, all empty")
        return
    depth = Table("queue", "ready messages")
    for name, count in sorted(busy.items()):
        depth.add_row(name + ("  [red](dead letters)[/]" if name.endswith(".dlq") else ""), str(count))
    console.print(depth)
    console.print(f"the other {len(queues) - len(busy)} queues are empty (`eco2 status --json` lists every one)")


def status(options: RunnerOptions, as_json: bool) -> int:
    state = read_state(options)
    if state is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            console.print("the pack is not running (start it with `eco2 up --detach`)")
        return 1
    letters = read_dead_letters(str(state.get("redis") or options.redis_url), list(state.get("routes") or []))
    budgets = model_budgets(str(state.get("redis") or options.redis_url), state.get("model_capacity"))
    if as_json:
        report = health(state)
        endpoints = {
            "running": True,
            **report,
            "gateway": state.get("gateway"),
            "ingress": state.get("ingress"),
            "model": state.get("model"),
            "functions": {
                name: {
                    "urls": [r["url"] for r in info["replicas"]],
                    "metrics": [r["metrics"] for r in info["replicas"] if r.get("metrics")],
                    "replicas": len(info["replicas"]),
                }
                for name, info in state.get("functions", {}).items()
            },
            "queues": state.get("queues", {}),
            "dead_letters": letters,
            "model_budgets": budgets,
        }
        print(json.dumps(endpoints, indent=2))
    else:
        print_status(state, letters, budgets)
    return 0


def model_budgets(redis_url: str, configured: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each model's shared budget (eco2.capacity) against the pack's settings (from its state, else this shell's);
    none listed when Redis cannot be read (shown above)."""
    from eco2.capacity import CapacitySettings, read_budgets

    settings = CapacitySettings(**configured) if configured else CapacitySettings.from_env(os.environ)
    client = sync_redis(redis_url, socket_timeout=2, socket_connect_timeout=2, decode_responses=False)
    try:
        return read_budgets(client, settings)
    except redis.RedisError:
        return []
    finally:
        client.close()


def default_options() -> RunnerOptions:
    from eco2.serving import project_root

    return RunnerOptions.from_env(project_root(), dict(os.environ))
