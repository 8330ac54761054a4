"""The HA set's processes: started detached, their ids written down, and stopped from that record alone.

`up` returns while the servers run, so a later `down` (another process) finds them by the pid file in the set's
directory; a pid is only signalled while its command line still names that directory, so a recycled pid of an
unrelated process is never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PIDS_FILE = "pids.json"
# The servers this process started, so it reaps them when they end (no zombies, no "still running" warning when
# a test starts and stops a set in one process); a set brought up by another process is found by its pid file.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class SetError(RuntimeError):
    """A server of the set did not start, or did not reach its expected state in time."""


def start(directory: Path, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Start `command` in its own session (it outlives this process), logging to <directory>/<name>.log."""
    log = (directory / f"{name}.log").open("ab")
    process = subprocess.Popen(  # noqa: S603 - the set's own server programs, resolved from PATH
        list(command), cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    log.close()
    _CHILDREN[process.pid] = process
    record(directory, name, process.pid)
    return process.pid


def record(directory: Path, name: str, pid: int) -> None:
    pids = recorded(directory)
    pids[name] = pid
    (directory / PIDS_FILE).write_text(json.dumps(pids, indent=2))


def recorded(directory: Path) -> dict[str, int]:
    path = directory / PIDS_FILE
    return {str(name): int(pid) for name, pid in json.loads(path.read_text()).items()} if path.is_file() else {}


def owned(pid: int, directory: Path) -> bool:
    """Some process of the group `pid` leads (a server and what it started) still runs inside `directory`: its
    command line names it, or its working directory is in it."""
    return any(_inside(member, directory) for member in _group(pid))


def _group(pgid: int) -> list[int]:
    """The processes of a process group. A server's recorded pid may be a wrapper (rabbitmq-server is a shell
    script that runs the Erlang VM as its child), so a server is its whole group (each leads its own session)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _inside(pid: int, directory: Path) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return bool(command) and (str(directory) in command or cwd.startswith(str(directory)))


def kill(directory: Path, name: str, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Signal one recorded server's whole group (a fault: SIGKILL; SIGSTOP/SIGCONT a stall); False when it is
    not running."""
    pid = recorded(directory).get(name)
    if pid is None or not owned(pid, directory):
        return False
    _signal_group(pid, sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        _reap(pid, wait_seconds=5.0)
    return True


def stop_all(directory: Path, *, grace_seconds: float = 10.0) -> list[str]:
    """SIGTERM every recorded server that still runs, SIGKILL what outlives the grace; the names stopped."""
    alive = {name: pid for name, pid in recorded(directory).items() if owned(pid, directory)}
    for pid in alive.values():
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(owned(pid, directory) for pid in alive.values()):
        time.sleep(0.1)
    for pid in alive.values():
        if owned(pid, directory):
            _signal_group(pid, signal.SIGKILL)
        _reap(pid, wait_seconds=5.0)
    return sorted(alive)


def _reap(pid: int, *, wait_seconds: float) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=wait_seconds)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # Each server leads its own session (start_new_session), so its group is its own children and nothing else.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def wait_until(condition: Callable[[], bool], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SetError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)
