"""Function processes: the container command of the manifest, run as it is, dying with the runner.

A Knative pod runs `eco2 serve NAME` in a fresh interpreter; so does the local runner, with the `eco2`
console script of the interpreter it runs under (the venv's), so every local cold start and every local
memory figure is what a pod pays.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
# Resolved here, before any fork: between fork and exec the child only calls it (dlopen or dlsym there could
# deadlock on a lock another thread of the runner held when it forked).
_PRCTL: Any = None
with contextlib.suppress(OSError, AttributeError):  # no prctl: not Linux
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


class CommandNotFound(FileNotFoundError):
    """The manifest's command names a program that is neither beside this interpreter nor on PATH."""


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the runner dies (a SIGKILLed runner must not leave processes
    holding ports). Linux only; elsewhere a no-op."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def resolve_program(program: str) -> str:
    """`eco2` (or any console script) beside this interpreter, i.e. in its venv, else the one on PATH."""
    if "/" in program:
        return program
    beside = Path(sys.executable).parent / program
    if beside.is_file():
        return str(beside)
    found = shutil.which(program)
    if found is None:
        raise CommandNotFound(f"{program!r} is neither beside {sys.executable} nor on PATH")
    return found


def container_command(command: Sequence[str]) -> list[str]:
    """The manifest's container command, exactly, with its program resolved as a container's PATH would."""
    if not command:
        raise CommandNotFound("the Service's container has no command")
    return [resolve_program(command[0]), *command[1:]]


async def start_process(
    command: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path
) -> asyncio.subprocess.Process:
    """Run `command` with its output appended to `log_path`; it gets SIGTERM if the runner dies."""
    with log_path.open("ab") as log_file:
        return await asyncio.create_subprocess_exec(
            *container_command(command),
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            preexec_fn=die_with_parent,
        )
