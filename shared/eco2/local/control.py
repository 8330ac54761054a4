"""`eco2 up / status / down`: run the local pack in the foreground or detached, and report on it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from eco2.local.runner import DependencyMissing, LocalPack, RunnerOptions, run_until_stopped
from eco2.manifests import ManifestError

console = Console()


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
    return asyncio.run(_serve(pack))


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
            [sys.executable, "-m", "eco2.cli", "up"],
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


def down(options: RunnerOptions, timeout: float = 30.0) -> int:
    state = read_state(options)
    if state is None:
        console.print("the pack is not running")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        console.print(f"[yellow]runner {pid} still running after {timeout:.0f}s; sending SIGKILL[/]")
        os.kill(pid, signal.SIGKILL)
    console.print("stopped")
    return 0


def print_status(state: dict[str, Any]) -> None:
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
    template = state.get("template")
    if template and template.get("available"):
        console.print(f"  starts   forked from the template process (pid {template.get('pid')})")
    else:
        console.print("  starts   fresh interpreters" + (" [yellow](the template is gone)[/]" if template else ""))
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
        depth = Table("queue", "ready messages")
        for name, count in sorted(queues.items()):
            depth.add_row(name + ("  [red](dead letters)[/]" if name.endswith(".dlq") and count else ""), str(count))
        console.print(depth)


def status(options: RunnerOptions, as_json: bool) -> int:
    state = read_state(options)
    if state is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            console.print("the pack is not running (start it with `eco2 up --detach`)")
        return 1
    if as_json:
        endpoints = {
            "running": True,
            "gateway": state.get("gateway"),
            "ingress": state.get("ingress"),
            "model": state.get("model"),
            "functions": {
                name: {"urls": [r["url"] for r in info["replicas"]], "replicas": len(info["replicas"])}
                for name, info in state.get("functions", {}).items()
            },
            "queues": state.get("queues", {}),
        }
        print(json.dumps(endpoints, indent=2))
    else:
        print_status(state)
    return 0


def default_options() -> RunnerOptions:
    from eco2.serving import project_root

    return RunnerOptions.from_env(project_root(), dict(os.environ))
