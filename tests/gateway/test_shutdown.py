"""SIGTERM to `eco2 serve gateway` with an SSE stream open: the stream ends cleanly at once, the process exits 0.

Cleanly: the chunked body is complete, so the client sees the end of the stream and resumes with Last-Event-ID;
without the gateway's drain the connection is cut mid-body (sse-starlette's own exit handling).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import httpx

from eco2.jobs import JobStore
from tests.gateway.conftest import gateway_env
from tests.gateway.support import RecordingSink, bearer, open_stream
from tests.support import free_port, start_child

GRACE_SECONDS = 20


async def test_sigterm_ends_open_sse_streams_and_exits_zero_well_within_the_grace(
    store: JobStore, sink: RecordingSink, tmp_path: Path
) -> None:
    job_id = uuid.uuid4().hex
    await store.create(job_id, "user-1")  # queued, and nothing will move it: the stream stays open
    port = free_port()
    env = gateway_env(sink.url, ECO2_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    gateway = start_child(["serve", "gateway", "--port", str(port)], port=port, env=env, log_dir=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            response, messages = await open_stream(client, f"/api/v1/scan/{job_id}/events", headers=bearer())
            first = await anext(messages)
            assert first.event is not None
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(GRACE_SECONDS / 2):  # it ends by the drain, not by the grace running out
                async for _ in messages:
                    pass
            await response.aclose()
        assert await asyncio.to_thread(gateway.process.wait, GRACE_SECONDS) == 0, gateway.log()
        assert time.monotonic() - signalled < GRACE_SECONDS / 2
    finally:
        gateway.stop()
