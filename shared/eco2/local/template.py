"""The template process: imports what every function needs once, then forks function processes on request.

Run by the local runner as `python -m eco2.local.template`, one per pack; the protocol on its stdin and
stdout is described in eco2.local.processes. A fork starts with functions-framework, uvicorn, redis, pydantic,
cloudevents, prometheus-client and the openai SDK imported, and shares their memory pages with the template
until it writes to them. Nothing that reads settings is imported here: each child builds its settings from
its own environment after the fork, exactly as `python -m eco2.serving NAME` does.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, NoReturn

from eco2.local.processes import die_with_parent

# What `python -m eco2.serving NAME` imports for any stage function, plus the submodules that uvicorn and the
# HTTP client under the openai SDK import lazily on first use. The eco2 modules here read no environment
# while importing (settings come from Settings.from_env in the child); the few third-party variables read at
# import are IMPORT_TIME_VARIABLES in eco2.local.processes. The gateway's own modules are left to its
# process (one replica). Missing optional ones (uvloop, httptools) are skipped, as uvicorn skips them.
PRELOAD = (
    "asyncio",
    "functions_framework.aio",
    "starlette.applications",
    "uvicorn",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.asyncio",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "redis.asyncio",
    "pydantic",
    "prometheus_client",
    "cloudevents.http",
    "cloudevents.conversion",
    "httpx",
    "httpcore2",
    "anyio.streams.memory",
    "anyio.streams.tls",
    "anyio._backends._asyncio",
    "eco2.serving",
    "eco2.adapter",
    "eco2.stages",
    "eco2.deadletter",
    "eco2.model",
)
STOP_CHILDREN_TIMEOUT = 10.0
_READ_SIZE = 1 << 16


def preload() -> list[str]:
    """Import PRELOAD and the openai SDK; what could not be imported (a child imports it again, or not)."""
    failed: list[str] = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    try:
        from eco2.model import load_sdk

        load_sdk()
    except Exception as exc:
        failed.append(f"openai ({type(exc).__name__}: {exc})")
    return failed


@dataclass(frozen=True)
class SpawnRequest:
    id: int
    function: str
    env: dict[str, str]
    cwd: str
    log: str

    @classmethod
    def parse(cls, line: bytes) -> SpawnRequest:
        raw = json.loads(line)
        return cls(int(raw["id"]), str(raw["function"]), dict(raw["env"]), str(raw["cwd"]), str(raw["log"]))


class TemplateServer:
    """Reads spawn requests from `requests`, forks, and reports pids and exit statuses on `replies`."""

    def __init__(self, requests: int = 0, replies: int = 1) -> None:
        self._requests = requests
        self._replies = replies
        self._buffer = b""
        self._children: set[int] = set()
        self._wakeup_read, self._wakeup_write = os.pipe()
        os.set_blocking(self._wakeup_read, False)
        os.set_blocking(self._wakeup_write, False)
        # SIGCHLD wakes the selector through this pipe; a Python handler is needed for the byte to be written.
        signal.set_wakeup_fd(self._wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._selector = selectors.DefaultSelector()
        self._selector.register(requests, selectors.EVENT_READ)
        self._selector.register(self._wakeup_read, selectors.EVENT_READ)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self._replies, data) :]

    def serve(self) -> None:
        """Until the runner closes our stdin (or dies): then stop the children that are left."""
        try:
            while self._serve_once():
                pass
        except BrokenPipeError:
            pass  # the runner is gone; PR_SET_PDEATHSIG is on its way
        self._stop_children()

    def _serve_once(self) -> bool:
        for key, _ in self._selector.select():
            if key.fd == self._wakeup_read:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wakeup_read, _READ_SIZE):
                        pass
            else:
                data = os.read(self._requests, _READ_SIZE)
                if not data:
                    return False
                self._buffer += data
                *lines, self._buffer = self._buffer.split(b"\n")
                for line in filter(None, lines):
                    self._fork(SpawnRequest.parse(line))
        self._reap()
        return True

    def _fork(self, request: SpawnRequest) -> None:
        template_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            self.send({"id": request.id, "error": exc.strerror or repr(exc)})
            return
        if pid == 0:
            try:
                self._close_in_child()
            except BaseException:
                os._exit(1)  # never fall back into the template's loop as a second template
            run_child(request, template_pid=template_pid)
        self._children.add(pid)
        self.send({"id": request.id, "pid": pid})

    def _close_in_child(self) -> None:
        signal.set_wakeup_fd(-1)
        self._selector.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)

    def _reap(self) -> None:
        while self._children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._children.clear()
                return
            if pid == 0:
                return
            self._children.discard(pid)
            self.send({"exited": pid, "status": os.waitstatus_to_exitcode(status)})

    def _stop_children(self) -> None:
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_CHILDREN_TIMEOUT
        while self._children and time.monotonic() < deadline:
            with contextlib.suppress(BrokenPipeError):
                self._reap()
            time.sleep(0.01)
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_child(request: SpawnRequest, *, template_pid: int) -> NoReturn:
    """In the fork: become `python -m eco2.serving FUNCTION` with the requested environment, then exit."""
    status = 1
    try:
        _reset_signals()
        die_with_parent()
        if os.getppid() != template_pid:  # the template died before PR_SET_PDEATHSIG was set
            os._exit(1)
        # Replaces the C environment too (putenv/unsetenv), so libraries reading it see the child's own.
        os.environ.clear()
        os.environ.update(request.env)
        os.chdir(request.cwd)
        _redirect(request.log)
        status = _serve(request.function)
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        logging.shutdown()
        os._exit(status)


def _reset_signals() -> None:
    # As a fresh interpreter has them; uvicorn installs its own SIGINT/SIGTERM handlers later.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _redirect(log_path: str) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    log_file = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)  # also closes the request pipe in this process
    os.dup2(log_file, 1)  # and the reply pipe
    os.dup2(log_file, 2)
    os.close(devnull)
    os.close(log_file)


def _serve(function: str) -> int:
    from eco2 import serving

    sys.argv = [serving.__file__, function]
    return serving.main([function])


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main() -> NoReturn:
    # Ctrl-C reaches the whole process group: the runner decides when the template stops (stdin closed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.perf_counter()
    failed = preload()
    # Freeze what is imported so the collector of a child never writes to (and so copies) these pages.
    gc.collect()
    gc.freeze()
    server = TemplateServer()
    seconds = round(time.perf_counter() - started, 3)
    # fork() copies only the calling thread: a library that started one here would leave it dead in every child.
    threads = threading.active_count()
    print(
        f"template {os.getpid()}: {len(sys.modules)} modules in {seconds}s, {threads} thread(s); "
        f"not imported: {failed}",
        file=sys.stderr,
    )
    server.send({"ready": True, "seconds": seconds, "modules": len(sys.modules)})
    server.serve()
    sys.exit(0)


if __name__ == "__main__":
    main()
