"""Send scans through the gateway as the app would, then audit every job the pack accepted.

A submit is retried with its X-Idempotency-Key until it is answered 202 (a gateway killed or restarted in the
middle is what the key is for). After the run every accepted job must have ended exactly once — done, or
failed with a reason — with no duplicate event on its stream, no duplicate `eco2.reward.granted` on the broker
(counted on a queue of our own bound to the broker's exchange), and its model calls counted by the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
import httpx
import redis.asyncio as aioredis

from eco2 import keys
from eco2.connections import amqp_connect_robust
from eco2.errors import REDIS_TRANSIENT
from eco2.events import source_of
from eco2.gateway.tokens import DEV_JWT_SECRET, issue_token
from eco2.rewards import reward_id
from eco2_tools.standin.samples import SAMPLES
from tests.faults.pack import Pack

USERS = 20
SUBMIT_DEADLINE = 120.0
TERMINAL = frozenset({"done", "failed", "cancelled"})


@dataclass
class Audit:
    case: str
    scans: int
    accepted: int = 0
    done: int = 0
    failed: int = 0
    lost: int = 0
    duplicate_events: int = 0
    duplicate_rewards: int = 0
    rewards: int = 0
    lost_rewards: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        clean = self.lost == 0 and self.duplicate_events == 0 and self.duplicate_rewards == 0
        return clean and not self.lost_rewards and not self.problems

    def row(self) -> dict[str, Any]:
        per_job = self.model_calls / self.accepted if self.accepted else 0.0
        return {
            "case": self.case,
            "scans": self.scans,
            "done": self.done,
            "failed visibly": self.failed,
            "lost": self.lost,
            "duplicate events": self.duplicate_events,
            "rewards granted": self.rewards,
            "duplicate rewards": self.duplicate_rewards,
            "lost rewards": self.lost_rewards,
            "model calls per job": round(per_job, 2),
            "wall s": round(self.seconds, 1),
            "problems": len(self.problems),
        }


def tokens() -> list[str]:
    return [
        issue_token(f"fault-user-{n}", DEV_JWT_SECRET, 3600, None, issuer="eco2", audience="eco2") for n in range(USERS)
    ]


async def submit_all(pack: Pack, count: int, *, concurrency: int = 20) -> list[str]:
    """Submit `count` scans (each retried with its idempotency key until accepted); the accepted job ids."""
    users = tokens()
    samples = sorted(sample.name for sample in SAMPLES)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=10) as http:

        async def one(n: int) -> str | None:
            async with gate:
                body = {"image_url": f"{pack.standin}/samples/{samples[n % len(samples)]}.png"}
                headers = {"Authorization": f"Bearer {users[n % USERS]}", "X-Idempotency-Key": uuid.uuid4().hex}
                return await _submit(http, pack.gateway, body, headers)

        accepted = await asyncio.gather(*(one(n) for n in range(count)))
    return [job for job in accepted if job is not None]


async def _submit(http: httpx.AsyncClient, gateway: str, body: dict[str, str], headers: dict[str, str]) -> str | None:
    deadline = time.monotonic() + SUBMIT_DEADLINE
    while time.monotonic() < deadline:
        try:
            response = await http.post(f"{gateway}/api/v1/scan", json=body, headers=headers)
            if response.status_code == 202:
                return str(response.json()["job_id"])
            if response.status_code < 500 and response.status_code != 429:
                raise AssertionError(f"submit refused: {response.status_code} {response.text}")
        except httpx.TransportError:
            pass  # the gateway is down or restarting: the same key again
        await asyncio.sleep(0.2 + random.random() * 0.3)
    return None


class RewardCounter:
    """A queue of our own bound to the broker exchange on the reward function's eco2.reward.granted: counts each."""

    def __init__(self, pack: Pack) -> None:
        self._pack = pack
        self.by_reward: Counter[str] = Counter()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._connection = await amqp_connect_robust(self._pack.amqp_url)
        channel = await self._connection.channel()
        exchange = await channel.get_exchange(self._pack.exchange)
        queue = await channel.declare_queue(f"{self._pack.prefix}.audit.rewards", durable=True)
        # Only the reward function's grants: the poison case sends forged eco2.reward.granted to the ingress too.
        binding: dict[str, Any] = {"x-match": "all", "type": "eco2.reward.granted", "source": source_of("reward")}
        await queue.bind(exchange, arguments=binding)
        await queue.consume(self._count, no_ack=True)

    async def _count(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.by_reward[json.loads(message.body).get("reward_id", "?")] += 1

    async def aclose(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def wait_ended(redis: aioredis.Redis, job_ids: list[str], timeout: float) -> dict[str, str]:
    """Each job's status once all ended, or at the deadline (stuck ones keep their last status)."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while True:
        pipe = redis.pipeline()
        for job_id in job_ids:
            pipe.hget(keys.job(job_id), "status")
        try:
            found = await pipe.execute()
        except REDIS_TRANSIENT:
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.5)  # the pause-redis case drops every connection, ours too: ask again
            continue
        statuses = {job: str(status or "missing") for job, status in zip(job_ids, found, strict=True)}
        if all(status in TERMINAL for status in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.5)


async def audit(
    audit: Audit, pack: Pack, redis: aioredis.Redis, job_ids: list[str], rewards: RewardCounter, timeout: float
) -> Audit:
    statuses = await wait_ended(redis, job_ids, timeout)
    audit.accepted = len(job_ids)
    audit.lost = audit.scans - audit.accepted + sum(status not in TERMINAL for status in statuses.values())
    audit.done = sum(status == "done" for status in statuses.values())
    for job_id, status in statuses.items():
        if status == "failed" and not await redis.hget(keys.job(job_id), "error"):
            audit.lost += 1  # failed without saying why is not "failed visibly"
            audit.notes.append(f"{job_id} failed without a reason")
        elif status == "failed":
            audit.failed += 1
        audit.duplicate_events += await _duplicate_events(redis, job_id)
    await asyncio.sleep(1.0)  # let the last reward.granted reach our counting queue
    audit.rewards = len(rewards.by_reward)
    audit.duplicate_rewards = sum(count - 1 for count in rewards.by_reward.values() if count > 1)
    audit.lost_rewards = len(await _earned_rewards(redis, job_ids) - set(rewards.by_reward))
    stats = httpx.get(f"{pack.standin}/v1/standin/stats", timeout=5).json()
    audit.model_calls = sum(sum(stats["by_job"].get(job, {}).values()) for job in job_ids)
    return audit


async def _earned_rewards(redis: aioredis.Redis, job_ids: list[str]) -> set[str]:
    """The reward ids the finished jobs earned: each must reach the broker once (the first job claims it)."""
    earned: set[str] = set()
    for job_id in job_ids:
        job = cast(dict[str, str], await redis.hgetall(keys.job(job_id)))
        reward = json.loads(job.get("result") or "{}").get("reward")
        if reward:
            earned.add(reward_id(job["user_id"], reward["character_id"]))
    return earned


async def _duplicate_events(redis: aioredis.Redis, job_id: str) -> int:
    """(stage, status) pairs seen twice within one run of the job (a replay's reopen starts a new run)."""
    entries = await redis.xrange(keys.job_events(job_id))
    # A reopen (replay) starts a new run of the job; within a run each (stage, status) appears once, and a
    # streamed-text piece (status "delta") once per (stage, index).
    duplicates = 0
    seen: Counter[tuple[str, str, str]] = Counter()
    for _, fields in cast(list[Any], entries or []):
        if '"waiting_for_capacity"' in fields.get("data", ""):
            continue  # a note that a model call waits (its stage and status unchanged), not a step of the job
        if '"reopened"' in fields.get("data", ""):
            duplicates += sum(count - 1 for count in seen.values())
            seen.clear()
        seen[(fields["stage"], fields["status"], fields.get("index", ""))] += 1
    return duplicates + sum(count - 1 for count in seen.values())
