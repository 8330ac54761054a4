"""Fixtures of the web tests: the whole pack (tests.local's start_pack), the gateway in process, the S3 emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eco2_tools.local.emulators import emulator_env
from tests.gateway.conftest import make_gateway, session_sink, sink
from tests.local.conftest import start_pack
from tests.support import free_port

__all__ = ["emulator", "make_gateway", "session_sink", "sink", "start_pack"]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The LOCAL S3 emulator as its own process; the environment that points a function at it."""
    port = free_port()
    log = tmp_path_factory.mktemp("emulator") / "s3.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "eco2_tools.local.emulators", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ),
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, Path(log).read_text()
        assert time.monotonic() < deadline, "the S3 emulator did not start"
        time.sleep(0.1)
    yield emulator_env(url)
    process.terminate()
    process.wait(10)
