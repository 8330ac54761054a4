"""Function processes however they were started: a fresh interpreter, or a fork of the template process.

The template (`python -m eco2.local.template`, one per pack) has the heavy modules imported already, so a
fork of it serves its first event in a fraction of a fresh interpreter's start. The runner talks to it over
the template's stdin and stdout, one JSON object per line:

    runner → template   {"id": 1, "function": "rules", "env": {...}, "cwd": "/…", "log": "/…/rules-4711.log"}
    template → runner   {"ready": true, "seconds": 0.8, "modules": 1234}   once, when preloading is done
                        {"id": 1, "pid": 4242}  or  {"id": 1, "error": "…"}   per request, in order
                        {"exited": 4242, "status": 0}   per child (negative status: killed by that signal)

Only the template can wait for its children, so it reports their exits; the runner signals them through
pidfds opened as soon as it learns their pid, so a stop or kill cannot hit a recycled pid later.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("eco2.local.processes")

TEMPLATE_MODULE = "eco2.local.template"
# Reported for a forked child whose template died before reporting it: its status is lost with the template.
LOST_STATUS = 255
SPAWN_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Read while the template imports its modules, so a child cannot change them: a Service setting one to
# something else than the runner's environment gets a fresh interpreter (as do all PYTHON* variables).
IMPORT_TIME_VARIABLES = frozenset(
    {
        "OPENAI_LOG",
        "OPENAI_API_TYPE",
        "OPENAI_API_VERSION",
        "DEFER_PYDANTIC_BUILD",
        "PYDANTIC_DISABLE_PLUGINS",
        "PROMETHEUS_DISABLE_CREATED_SERIES",
        "PROMETHEUS_LEGACY_NAME_VALIDATION",
        "PROMETHEUS_MULTIPROC_DIR",
        "prometheus_multiproc_dir",
    }
)
# Only affects writing bytecode, which the runner allows its function processes anyway.
_IGNORED_PYTHON_VARIABLES = frozenset({"PYTHONDONTWRITEBYTECODE"})


def die_with_parent() -> None:
    # If the runner is SIGKILLed its function processes must not live on holding ports.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def prefork_supported() -> bool:
    """Forking a template needs Linux: fork, PR_SET_PDEATHSIG and pidfds."""
    return sys.platform == "linux" and hasattr(os, "fork") and hasattr(os, "pidfd_open")


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that a module may have read while the template imported it."""
    return {
        name: value
        for name, value in env.items()
        if name in IMPORT_TIME_VARIABLES or (name.startswith("PYTHON") and name not in _IGNORED_PYTHON_VARIABLES)
    }


class FunctionProcess(Protocol):
    """What the function pool needs of a process; asyncio's subprocess and a forked child both have it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


class ForkedProcess:
    """A child of the template: signalled through a pidfd, its exit status reported by the template."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd: int | None = None
        with contextlib.suppress(ProcessLookupError):  # already gone: the template's report follows
            self._pidfd = os.pidfd_open(pid)

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self._pidfd is not None and not self._exited.done():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def exited(self, status: int) -> None:
        if not self._exited.done():
            self._exited.set_result(status)
        if self._pidfd is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def orphaned(self) -> None:
        """The template is gone (its children get SIGTERM); done once the process has really exited."""
        if self._pidfd is None:
            self.exited(LOST_STATUS)
            return
        # A pidfd turns readable when its process exits, whoever reaps it.
        asyncio.get_running_loop().add_reader(self._pidfd, self.exited, LOST_STATUS)


class TemplateUnavailable(RuntimeError):
    """The template process is not running (or stopped answering): start a fresh interpreter instead."""


class Template:
    """The runner's side of the template process: start it, fork functions from it, stop it."""

    def __init__(self, *, cwd: Path, env: Mapping[str, str], log_path: Path) -> None:
        self._cwd = cwd
        self._env = dict(env)
        self._import_time_env = import_time_env(env)
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._ready: asyncio.Future[float] | None = None
        self._available = False
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def available(self) -> bool:
        return self._available

    def compatible(self, env: Mapping[str, str]) -> bool:
        """Whether a fork would run with what `env` asks for (see IMPORT_TIME_VARIABLES)."""
        return import_time_env(env) == self._import_time_env

    async def start(self) -> None:
        """Launch the template; it preloads in the background while spawn requests queue in its pipe."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        with self._log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                TEMPLATE_MODULE,
                cwd=self._cwd,
                env=self._env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                preexec_fn=die_with_parent,
            )
        self._available = True
        self._reader = asyncio.create_task(self._read(self._process))

    async def wait_ready(self, timeout: float = SPAWN_TIMEOUT) -> float:
        """Seconds the template took to preload; TemplateUnavailable if it died first."""
        if self._ready is None:
            raise TemplateUnavailable("the template was not started")
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def spawn(self, function: str, *, env: Mapping[str, str], cwd: Path, log_path: Path) -> ForkedProcess:
        """Fork `python -m eco2.serving FUNCTION` from the template, with its own environment and log."""
        process = self._process
        if not self._available or process is None or process.stdin is None:
            raise TemplateUnavailable("the template is not running")
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        request = {"id": request_id, "function": function, "env": dict(env), "cwd": str(cwd), "log": str(log_path)}
        try:
            process.stdin.write(json.dumps(request).encode() + b"\n")
            await process.stdin.drain()
            return await asyncio.wait_for(asyncio.shield(reply), SPAWN_TIMEOUT)
        except (BrokenPipeError, ConnectionResetError):
            raise TemplateUnavailable("the template closed its pipe") from None
        except TimeoutError:
            self._lose(f"no answer to a spawn request in {SPAWN_TIMEOUT:.0f}s")
            process.kill()
            raise TemplateUnavailable("the template stopped answering") from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                self._handle(json.loads(line))
        except Exception as exc:  # a garbled channel: the template cannot be trusted with more requests
            log.warning("unreadable message from the template", extra={"fields": {"error": repr(exc)}})
            process.kill()
        # Its stdout closed: the template exited or is exiting (not awaited when cancelled: it may live on).
        status = await process.wait()
        self._lose(f"it exited with {status}")

    def _handle(self, message: dict[str, Any]) -> None:
        if "exited" in message:
            child = self._children.pop(int(message["exited"]), None)
            if child is not None:
                child.exited(int(message["status"]))
        elif "pid" in message:
            self._forked(int(message["id"]), ForkedProcess(int(message["pid"])))
        elif "error" in message:
            reply = self._pending.get(int(message["id"]))
            if reply is not None and not reply.done():
                reply.set_exception(TemplateUnavailable(f"the template could not fork: {message['error']}"))
        elif message.get("ready") and self._ready is not None and not self._ready.done():
            self._ready.set_result(float(message["seconds"]))
            log.info("template ready", extra={"fields": {"seconds": message["seconds"], "pid": self.pid}})

    def _forked(self, request_id: int, child: ForkedProcess) -> None:
        self._children[child.pid] = child
        reply = self._pending.get(request_id)
        if reply is None or reply.done():
            child.terminate()  # its requester gave up (cancelled, timed out): nobody would ever stop it
        else:
            reply.set_result(child)

    def _lose(self, why: str) -> None:
        """The template is gone: fail waiting requests, and let its children be seen exiting."""
        if not self._available:
            return
        self._available = False
        if not self._stopping:
            log.warning(
                f"the template process is gone ({why}); functions start as fresh interpreters from now on",
                extra={"fields": {"pid": self.pid}},
            )
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(TemplateUnavailable(f"the template is gone ({why})"))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(TemplateUnavailable(f"the template is gone ({why})"))
            self._ready.exception()  # retrieved: nobody may be waiting for readiness
        for child in self._children.values():
            child.orphaned()
        self._children.clear()

    async def stop(self) -> None:
        """Close the template's stdin: it stops its remaining children, reports them and exits."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader
