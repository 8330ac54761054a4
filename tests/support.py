"""Test support: free ports (the runner's own), child processes that are ready when returned, waiting on a condition,
a small real HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import generate_latest

from eco2.adapter import ServedFunction
from eco2_tools.local.replicas import free_port

__all__ = ["REDIS_TEST_URL", "ROOT", "Child", "exposition", "free_port", "http_server", "start_child", "wait_for"]

ROOT = Path(__file__).resolve().parents[1]
REDIS_TEST_URL = os.environ.get("ECO2_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
# The sender credential of the packs the tests start (eco2.sender_auth): what their posts into an ingress present.
EVENT_TOKEN = "tests-pack-sender-credential-0123456789"
SENDER = {"Authorization": f"Bearer {EVENT_TOKEN}"}


@dataclass
class Child:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # Its Prometheus metrics, on the port of their own every child gets (eco2.metrics_port), as a pod does.
    metrics_url: str = ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_child(args: list[str], *, port: int, env: Mapping[str, str], log_dir: Path, timeout: float = 20.0) -> Child:
    """Start `python -m eco2_tools.cli <args>` and return once GET /healthz answers 200 (or fail with its log)."""
    log_path = log_dir / f"{args[0]}-{args[1] if len(args) > 1 else ''}-{port}.log"
    metrics_port = env.get("ECO2_METRICS_PORT") or str(free_port())
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "eco2_tools.cli", *args],
            cwd=ROOT,
            env={**os.environ, "ECO2_METRICS_PORT": metrics_port, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    child = Child(f"http://127.0.0.1:{port}", process, log_path, f"http://127.0.0.1:{metrics_port}/metrics")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args} exited with {process.returncode}:\n{child.log()}")
        try:
            if httpx.get(f"{child.url}/healthz", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"{args} did not become healthy in {timeout}s:\n{child.log()}")


async def wait_for(
    probe: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll `probe` until it returns something other than None/False, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def http_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 (aiohttp's) answering every request, any method and path, with `handler`;
    its base URL (no trailing slash)."""
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield f"http://127.0.0.1:{server.port}"


def exposition(function: ServedFunction) -> str:
    """What a function's metrics port (eco2.metrics_port) serves now, read in process without the port."""
    registry = function.metrics_registry()
    return generate_latest(registry).decode() if registry is not None else ""
