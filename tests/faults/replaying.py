"""The replay case's recovery: every scan failed visibly by a dead model, the fault cleared, `eco2 dlq replay`.

While the model fails every call, each job must reach `failed` (dead-lettered after its retries) and a few
clients stay on its SSE stream. Once all failed, the fault is cleared (the stand-in's /v1/standin/config) and
the operator's command replays the dead letters; the audit then expects every job `done`. A client that was
on the stream saw `failed` (the gateway ends a stream at a terminal event), reconnected with Last-Event-ID as
an EventSource does, and must see the reopen (`queued`) and then `done`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import redis.asyncio as aioredis

from eco2 import keys
from eco2.gateway.tokens import DEV_JWT_SECRET, issue_token
from eco2_tools.manifests import Manifests, backoff_seconds
from eco2_tools.sse_client import messages
from tests.faults.pack import Pack
from tests.faults.scans import wait_ended
from tests.support import ROOT

FOLLOWED = 5  # jobs whose SSE stream a client keeps following through the failure and the replay
FAIL_DEADLINE = 180.0  # retries 4 + 8 + 16 s after each failed call, plus the queue ahead of it
RECONNECT_PAUSE = 1.0  # an EventSource's retry delay (browsers: about 3 s)


def follow(pack: Pack, job_id: str, user_id: str, deadline: float) -> list[str]:
    """Follow a job's SSE stream, reconnecting with Last-Event-ID, until `done` or the deadline: the statuses."""
    token = issue_token(user_id, DEV_JWT_SECRET, 3600, None, issuer="eco2", audience="eco2")
    seen: list[str] = []
    last_id = ""
    url = f"{pack.gateway}/api/v1/scan/{job_id}/events"
    with httpx.Client(timeout=httpx.Timeout(10.0, read=60.0)) as http:
        while time.monotonic() < deadline and "done" not in seen:
            headers = {"Authorization": f"Bearer {token}"} | ({"Last-Event-ID": last_id} if last_id else {})
            try:
                with http.stream("GET", url, headers=headers) as response:
                    for message in messages(response):
                        last_id = message.id or last_id
                        seen.append(str(message.json().get("status")))
            except httpx.HTTPError:
                pass
            time.sleep(RECONNECT_PAUSE)
    return seen


async def fail_then_replay(pack: Pack, redis: aioredis.Redis, job_ids: list[str]) -> list[str]:
    """Wait for every job to fail visibly, clear the model fault, replay the dead letters with `eco2 dlq`."""
    started = time.monotonic()
    users = [str(await redis.hget(keys.job(job), "user_id")) for job in job_ids[:FOLLOWED]]
    followers = [
        asyncio.create_task(asyncio.to_thread(follow, pack, job, user, started + 2 * FAIL_DEADLINE + 120))
        for job, user in zip(job_ids, users, strict=False)
    ]
    statuses = await wait_ended(redis, job_ids, FAIL_DEADLINE)
    failed = sum(status == "failed" for status in statuses.values())
    failed_in = time.monotonic() - started
    bound = failure_bound(pack)
    httpx.post(f"{pack.standin}/v1/standin/config", json={"fault_500": 0.0}, timeout=5).raise_for_status()
    replayed = await asyncio.to_thread(_dlq_replay, pack)
    notes = [
        f"{failed} of {len(job_ids)} jobs failed visibly within {failed_in:.0f} s of the last submit (bound: vision's "
        f"backoffs and timeouts, {bound:.0f} s)",
        replayed,
    ]
    if failed != len(job_ids) or failed_in > bound:
        notes.append(f"problem: {len(job_ids) - failed} jobs did not fail within {bound:.0f} s")
    seen = await asyncio.gather(*followers)
    good = sum(_saw_failure_then_done(statuses) for statuses in seen)
    notes.append(f"{good} of {len(seen)} SSE clients saw failed, then the reopen (queued), then done")
    if good != len(seen):
        notes.append(f"problem: SSE clients saw {json.dumps(seen)}")
    return notes


def failure_bound(pack: Pack) -> float:
    """The longest a scan can take to fail at vision: every attempt's timeout plus every backoff."""
    manifests = Manifests.load(pack.workdir / "manifests")
    delivery = manifests.effective_delivery(manifests.triggers["vision-shard-0"])  # every shard's is the same
    assert delivery is not None
    assert delivery.timeout_seconds is not None
    backoffs = sum(backoff_seconds(delivery, n) for n in range(1, delivery.retry + 1))
    return backoffs + (delivery.retry + 1) * delivery.timeout_seconds


def _saw_failure_then_done(statuses: list[str]) -> bool:
    if "failed" not in statuses:
        return False
    after = statuses[statuses.index("failed") + 1 :]
    return "queued" in after and after[-1:] == ["done"]


def _dlq_replay(pack: Pack) -> str:
    env = pack.env() | {"K_SINK": f"http://127.0.0.1:{pack.ingress_port}"}
    command = [
        sys.executable,
        "-m",
        "eco2_tools.cli",
        "dlq",
        "replay",
        "--all-transient",
        "--redis-url",
        pack.redis_url,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    summary = done.stdout.strip().splitlines()[-1:] or ["(no output)"]
    if done.returncode != 0:
        return f"problem: `eco2 dlq replay` exited {done.returncode}: {done.stderr[-500:]}"
    return f"`eco2 dlq replay --all-transient`: {summary[0]}"
