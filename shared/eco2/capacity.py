"""Model capacity: a budget per model shared by every replica (calls in flight, requests per minute), held in Redis.

A call takes a slot before it is sent and gives it back after. A slot is a lease with an expiry, so the slots of a
replica that was SIGKILLed come back when their leases run out. With a free slot, taking it is one round trip (one
script); giving it back is one ZREM, safe to lose (the lease expires). A 429 pauses the model for every replica.
Every wait has full jitter so replicas do not come back in step.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis
from pydantic_settings import BaseSettings, SettingsConfigDict

from eco2 import keys, lua
from eco2.errors import RateLimited

# Called once when a call of a job starts waiting for capacity: job id, stage, model.
OnWait = Callable[[str, str, str], Awaitable[None]]
# OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class CapacitySettings(BaseSettings):
    """ECO2_MODEL_* settings of the budget. Off (today's behaviour) unless a provider limit is configured:
    ECO2_MODEL_MAX_IN_FLIGHT or ECO2_MODEL_REQUESTS_PER_MINUTE above 0 turns it on."""

    model_config = SettingsConfigDict(env_prefix="ECO2_MODEL_")

    max_in_flight: int = 0
    requests_per_minute: int = 0
    # The share of the in-flight cap new scans (vision) may fill: the rest is kept for work already past vision
    # (answer, chat), so a flood of new scans cannot starve the jobs closest to done.
    new_work_share: float = 0.8
    lease_seconds: float = 120.0
    # The longest a call waits for a slot before answering the broker 429 (the stage's time budget).
    wait_seconds: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.max_in_flight > 0 or self.requests_per_minute > 0


@dataclass(frozen=True)
class Lease:
    """A taken slot: give it back with Budget.release."""

    model: str
    lease_id: str
    waited_seconds: float


class CapacityObserver(Protocol):
    """Told of the budget's work, for metrics (eco2.observability.FunctionMetrics)."""

    def capacity_waited(self, model: str, seconds: float) -> None: ...
    def slots_changed(self, model: str, delta: int) -> None: ...
    def provider_refused(self, model: str) -> None: ...


def full_jitter(ceiling: float) -> float:
    """A wait drawn uniformly from [0, ceiling]: replicas told the same wait do not come back together."""
    return random.uniform(0.0, max(0.0, ceiling))


def reset_seconds(value: str) -> float | None:
    """An x-ratelimit-reset-* value in seconds ("6m0s", "20ms", or a bare number of seconds); None if unreadable."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value.strip():
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def exhausted_for(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider's limit stays used up, read from a reply's x-ratelimit-* headers: the reset of a
    limit (requests or tokens) whose remaining count is 0; None while both have room (or no headers)."""
    longest: float | None = None
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() != "0":
            continue
        reset = reset_seconds(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if reset is not None and (longest is None or reset > longest):
            longest = reset
    return longest


class Budget:
    """One per process: takes and gives back slots of each model's shared budget."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: CapacitySettings,
        *,
        prefix: str = "eco2:capacity",
        observer: CapacityObserver | None = None,
    ) -> None:
        self._client = client
        self._observer = observer
        self._settings = settings
        self._prefix = prefix
        self._acquire = lua.register(client, "capacity_acquire")
        self._pause = lua.register(client, "capacity_pause")

    @property
    def wait_seconds(self) -> float:
        return self._settings.wait_seconds

    def _keys(self, model: str) -> list[str]:
        base = f"{self._prefix}:{{{model}}}"
        return [f"{base}:inflight", f"{base}:requests", f"{base}:paused"]

    def cap_for(self, stage: str) -> int:
        """The in-flight cap a call of `stage` may fill: vision (new work) a share of it, the later stages all."""
        s = self._settings
        if stage != "vision" or s.max_in_flight <= 0:
            return s.max_in_flight
        return max(1, int(s.max_in_flight * s.new_work_share))

    async def try_acquire(self, model: str, lease_id: str, *, stage: str = "answer") -> float:
        """Takes a slot under `lease_id`: 0.0 when taken, else the milliseconds until one may be free."""
        s = self._settings
        taken, wait_ms = await self._acquire(
            keys=self._keys(model),
            args=[lease_id, int(s.lease_seconds * 1000), self.cap_for(stage), s.requests_per_minute],
        )
        return 0.0 if int(taken) == 1 else float(wait_ms)

    async def acquire(
        self,
        model: str,
        *,
        wait_seconds: float | None = None,
        stage: str = "answer",
        on_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> Lease:
        """A slot, waiting (with full jitter) for one within `wait_seconds`; RateLimited (the broker's 429) after."""
        budget = self._settings.wait_seconds if wait_seconds is None else wait_seconds
        started = time.monotonic()
        deadline = started + budget
        lease_id = uuid.uuid4().hex
        while True:
            wait_ms = await self.try_acquire(model, lease_id, stage=stage)
            if wait_ms == 0.0:
                lease = Lease(model, lease_id, time.monotonic() - started)
                if self._observer is not None:
                    self._observer.capacity_waited(model, lease.waited_seconds)
                    self._observer.slots_changed(model, 1)
                return lease
            if on_wait is not None:
                await on_wait()
                on_wait = None
            left = deadline - time.monotonic()
            if left <= 0:
                raise RateLimited("no model capacity within the stage's time budget", max(1.0, wait_ms / 1000))
            await asyncio.sleep(min(left, full_jitter(wait_ms / 1000)) or 0.001)

    async def release(self, lease: Lease) -> None:
        """Gives the slot back; a release that is lost is harmless: the lease expires."""
        if self._observer is not None:
            self._observer.slots_changed(lease.model, -1)
        await self._client.zrem(self._keys(lease.model)[0], lease.lease_id)

    async def refused(self, model: str, seconds: float) -> None:
        """The provider refused a call (429): counted, and the model paused for every replica."""
        if self._observer is not None:
            self._observer.provider_refused(model)
        await self.pause(model, seconds)

    async def pause(self, model: str, seconds: float) -> None:
        """Every replica waits `seconds` before its next call to `model`."""
        await self._pause(keys=[self._keys(model)[2]], args=[max(1, int(seconds * 1000))])

    async def learn(self, model: str, headers: Mapping[str, str]) -> None:
        """Tightens the shared budget from a reply's x-ratelimit-* headers: a used-up provider limit pauses the
        model for every replica until its reset, so none sends a call the provider would refuse."""
        seconds = exhausted_for(headers)
        if seconds is not None and seconds > 0:
            await self.pause(model, seconds)

    async def in_flight(self, model: str) -> int:
        """Slots of `model` held by live leases (for status and tests)."""
        key = self._keys(model)[0]
        return int(await self._client.zcount(key, f"({int(time.time() * 1000)}", "+inf"))


def model_budget(
    client: aioredis.Redis, stage_timeout_seconds: float, observer: CapacityObserver | None = None
) -> Budget | None:
    """The process's budget from ECO2_MODEL_* settings; None (calls go out as they come) when no limit is set.
    A call never waits for capacity longer than its stage's time budget."""
    settings = CapacitySettings()
    if not settings.enabled:
        return None
    settings.wait_seconds = min(settings.wait_seconds, stage_timeout_seconds)
    return Budget(client, settings, observer=observer)


def read_budgets(client: redis.Redis, prefix: str = "eco2:capacity") -> list[dict[str, Any]]:
    """Each model's budget as `eco2 status` shows it: slots in use / the cap (ECO2_MODEL_* of this shell), the
    seconds it stays paused. Read with a plain client: status is a short-lived command, not a pod."""
    settings = CapacitySettings()
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    budgets = []
    for raw in sorted(client.scan_iter(match=f"{prefix}:{{*}}:inflight", count=500)):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        model = key[len(prefix) + 2 : -len("}:inflight")]
        in_use = int(client.zcount(key, f"({now_ms}", "+inf"))
        paused = client.get(f"{prefix}:{{{model}}}:paused")
        paused_ms = max(0, int(paused) - now_ms) if paused is not None else 0
        budgets.append(
            {"model": model, "in_flight": in_use, "limit": settings.max_in_flight, "paused_for": paused_ms / 1000}
        )
    return budgets


class WaitAnnouncer:
    """Tells a job's SSE stream and GET /result that its model call waits for capacity (no status change)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._script = lua.register(client, "capacity_waiting")

    async def __call__(self, job_id: str, stage: str, model: str) -> None:
        wait = json.dumps({"model": model, "since": round(time.time(), 3)})
        await self._script(keys=[keys.job(job_id), keys.job_events(job_id)], args=[stage, wait, f"{time.time():.6f}"])
