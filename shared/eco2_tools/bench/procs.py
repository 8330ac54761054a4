"""The processes a runtime is made of, named by what they run, and their CPU time and memory from /proc."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from eco2_tools.bench.processes import cpu_seconds, proc_memory, rabbitmq_pid

# What carries the scan pipeline in each runtime; the stand-in model, the S3 emulator, the gateway and authz
# run beside either one and are left out of the sums (they are listed per process in the JSON).
PIPELINE = frozenset({"runner", "vision", "rules", "answer", "reward", "persist"})


def pipeline_label(label: str) -> bool:
    return label in PIPELINE or label.startswith("worker[")


@dataclass(frozen=True, slots=True)
class Proc:
    label: str
    pid: int


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(child) for child in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    seen, todo = [], [pid]
    while todo:
        current = todo.pop()
        seen.append(current)
        todo += _children(current)
    return seen


def label_of(pid: int) -> str | None:
    """`serve vision` → vision, the stand-in model, the S3 emulator, the runner; None for anything else."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return None
    if "serve" in argv and argv.index("serve") + 1 < len(argv):
        return argv[argv.index("serve") + 1]
    if "model-standin" in argv:
        return "stand-in"
    if "worker" in argv and "--celery" in argv:
        queues = next((a.split("=", 1)[1] for a in argv if a.startswith("--queues=")), "all")
        return f"worker[{queues}]"
    if "eco2_tools.local.emulators" in argv:
        return "s3-emulator"
    return "runner" if "up" in argv else None


def tree(root_pids: Iterable[int]) -> list[Proc]:
    """Every labelled process under the given roots (replicas come and go: call it when a figure is read)."""
    procs: list[Proc] = []
    for root in root_pids:
        for pid in descendants(root):
            label = label_of(pid)
            if label is not None:
                procs.append(Proc(label, pid))
    return procs


def services() -> list[Proc]:
    """The shared servers both runtimes use (on a shared machine their CPU includes other users' work)."""
    procs = []
    rabbit = rabbitmq_pid()
    if rabbit is not None:
        procs.append(Proc("rabbitmq", rabbit))
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "redis-server":
                    procs.append(Proc("redis", int(proc.name)))
    return procs


def cpu(procs: Iterable[Proc]) -> dict[int, float]:
    return {p.pid: value for p in procs if (value := cpu_seconds(p.pid)) is not None}


def cpu_by_label(procs: Iterable[Proc], before: Mapping[int, float], after: Mapping[int, float]) -> dict[str, float]:
    """CPU seconds spent between two readings, summed per label (a process started in between counts from 0)."""
    spent: dict[str, float] = {}
    for proc in procs:
        if proc.pid in after:
            spent[proc.label] = spent.get(proc.label, 0.0) + after[proc.pid] - before.get(proc.pid, 0.0)
    return spent


def rss_mb(procs: Iterable[Proc]) -> float:
    total = 0
    for proc in procs:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def memory_by_label(procs: Iterable[Proc]) -> dict[str, dict[str, float]]:
    """USS and PSS (MB) per label, summed over its processes."""
    memory: dict[str, dict[str, float]] = {}
    for proc in procs:
        with contextlib.suppress(OSError, KeyError):
            fields = proc_memory(proc.pid)
            entry = memory.setdefault(proc.label, {"uss": 0.0, "pss": 0.0, "processes": 0})
            entry["uss"] += fields["USS"] / 1024
            entry["pss"] += fields["Pss"] / 1024
            entry["processes"] += 1
    return memory
