"""What every benchmark's `main` does alike: the machine it ran on, the header, a run under a time budget that
always cleans up, and the results written as JSON (results/*.json, git-ignored)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import signal
import tempfile
import time
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from eco2_tools.bench.processes import Children
from eco2_tools.bench.report import Row

NOISY = "(a shared, noisy machine)"


class BenchError(RuntimeError):
    """The benchmark could not measure something; the message says what."""


def argument_parser(benchmark: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m tests.benchmarks.BENCHMARK`, described by its docstring's first line, with --out."""
    parser = argparse.ArgumentParser(
        prog=f"python -m tests.benchmarks.{benchmark}", description=(doc or "").split("\n")[0]
    )
    out = Path(f"results/{benchmark}.json")
    parser.add_argument("--out", type=Path, default=out, help=f"JSON results file (default {out})")
    return parser


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_total = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    return {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "mem_total_gb": round(mem_total / 1e9, 1),
        "load_average_start": _load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wide_console(width: int) -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=width)


def print_header(console: Console, title: str, machine: dict[str, Any], lines: Sequence[str] = ()) -> None:
    """The title, the machine and its load, then the benchmark's own setup lines."""
    console.rule(f"[bold]{title}")
    console.print(
        f"machine   {machine['hostname']}: nproc {machine['nproc']} ({machine['cpu_model']}), "
        f"{machine['mem_total_gb']} GB RAM; load average {' '.join(map(str, machine['load_average_start']))} {NOISY}"
    )
    console.print(f"python    {machine['python']} on {machine['platform']}")
    for line in lines:
        console.print(line)


def new_results(benchmark: str, machine: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": config,
    }


def json_default(value: object) -> object:
    """Rows as their JSON, objects with a `summary()` as that, other dataclasses field by field."""
    if isinstance(value, Row):
        return value.as_json()
    summary = getattr(value, "summary", None)
    if callable(summary):
        return summary()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def cancel_on_sigterm() -> None:
    """In the running task: SIGTERM cancels it, so its `finally` blocks clean up as on Ctrl-C."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


@contextlib.contextmanager
def workspace(prefix: str, nofile: int) -> Iterator[Children]:
    """A temporary directory with `logs/` for the children's logs; every child is stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        (Path(tmp_name) / "logs").mkdir()
        children = Children(Path(tmp_name) / "logs", nofile)
        try:
            yield children
        finally:
            children.stop_all()


def run_budgeted(run: Coroutine[Any, Any, None], results: dict[str, Any], budget: float) -> int:
    """Run the benchmark; its exit code, with what went wrong in results["error"]. Records the load at the end
    and the duration in `results`."""
    started = time.monotonic()
    code = 0
    try:
        asyncio.run(run)
    except KeyboardInterrupt:
        results["error"], code = "interrupted", 130
    except asyncio.CancelledError:
        results["error"], code = "terminated", 143
    except TimeoutError:
        results["error"], code = f"the run took longer than its budget of {budget:.0f}s", 1
    except Exception as exc:
        results["error"], code = f"{type(exc).__name__}: {exc}", 1
    results["machine"]["load_average_end"] = _load_average()
    results["duration_seconds"] = round(time.monotonic() - started, 1)
    return code


def write_results(console: Console, results: dict[str, Any], out: Path) -> None:
    """The closing lines (load, duration, error) and the JSON file."""
    console.print(
        f"load average at the end {' '.join(map(str, results['machine']['load_average_end']))}; "
        f"took {results['duration_seconds']} s"
    )
    if "error" in results:
        console.print(f"[bold red]error:[/] {results['error']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=json_default, ensure_ascii=False, allow_nan=False) + "\n")
    console.print(f"results written to {out}")
