"""Child processes of the benchmarks: started with a log each, killed with the benchmark, always stopped."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from eco2.serving import project_root
from eco2_tools.local.processes import die_with_parent
from eco2_tools.local.replicas import wait_healthy

ROOT = project_root()  # the checkout: children run `.venv/bin/eco2` and `python -m tests...` from it


# --- limits and child processes ----------------------------------------------------------------------------


def raise_nofile(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to `wanted` (at most the hard limit); the limits in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _child_setup(nofile: int) -> None:
    # In the child between fork and exec: C calls only (no imports, no locks).
    die_with_parent()  # PR_SET_PDEATHSIG: SIGTERM when the benchmark dies
    with contextlib.suppress(ValueError, OSError):
        raise_nofile(nofile)


class Children:
    """Every process the benchmark starts; stop_all() ends whichever still run. Spawn from the main thread only
    (PR_SET_PDEATHSIG fires when the spawning *thread* ends)."""

    def __init__(self, log_dir: Path, nofile: int) -> None:
        self.log_dir = log_dir
        self.nofile = nofile
        self._processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, args: Sequence[str], *, env: dict[str, str], log_name: str, pipes: bool = False
    ) -> subprocess.Popen[bytes]:
        """With `pipes`, stdin and stdout are the command channel (JSON lines); stderr always goes to the log."""
        nofile = self.nofile
        with (self.log_dir / f"{log_name}.log").open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 (the benchmark's own command lines: no shell)
                list(args),
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log_file,
                stderr=log_file,
                preexec_fn=lambda: _child_setup(nofile),
            )
        self._processes.append(process)
        return process

    def log_tail(self, log_name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{log_name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if process in self._processes:
            self._processes.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._processes)):
            with contextlib.suppress(Exception):
                self.stop(process)


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    """Until a child's /readyz (or /healthz) answers 200, as the runner waits for a replica."""
    async with aiohttp.ClientSession() as probe:
        await wait_healthy(probe, url, process)


# --- measurements of a process -----------------------------------------------------------------------------

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
SMAPS_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def proc_memory(pid: int) -> dict[str, int]:
    """kB: VmRSS and friends from /proc/<pid>/status, Pss and the shared/private split from smaps_rollup,
    and USS = Private_Clean + Private_Dirty (what the process alone holds: freed when it exits)."""
    fields: dict[str, int] = {}
    for path, wanted in ((f"/proc/{pid}/status", STATUS_FIELDS), (f"/proc/{pid}/smaps_rollup", SMAPS_FIELDS)):
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name in wanted:
                fields[name] = int(value.split()[0])
    fields["USS"] = fields["Private_Clean"] + fields["Private_Dirty"]
    return fields


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def function_env() -> dict[str, str]:
    """This process's environment as the runner passes it on to function processes (bytecode writes allowed)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return float(int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rabbitmq_pid() -> int | None:
    """The RabbitMQ node's Erlang VM on this machine, if it runs here (only read, for its CPU time)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() == "beam.smp" and b"rabbit" in (proc / "cmdline").read_bytes():
                return int(proc.name)
    return None
