"""Model capacity: a budget per model shared by every replica (calls in flight, requests and tokens per minute),
held in Redis.

A call takes a slot before it is sent and gives it back after. A slot is a lease with an expiry, so the slots of a
replica that was SIGKILLed come back when their leases run out. With capacity free, taking a slot is one round trip
(one script); giving it back is one ZREM, safe to lose (the lease expires), and only with an in-flight cap.
When capacity is short, calls wait in one queue per model, in order: VIP scans, then work past vision, then new
scans, first come first served within each, so a call waits as long as the queue ahead of it and not longer. A
429 pauses the model for every replica and doubles the interval between requests until calls go through again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import redis
import redis.asyncio as aioredis

from eco2 import keys, lua
from eco2.env import env_float, env_int
from eco2.errors import RateLimited

log = logging.getLogger("eco2.capacity")

# The priority of the work the current task does (eco2.events.Priority: "high" for VIP, or "normal"): set by
# the stage for its event, read when the model call takes its place in the queue.
CALL_PRIORITY: ContextVar[str] = ContextVar("eco2_call_priority", default="normal")
# The longest a queued call sleeps before asking again, and how long past that its place is kept: a call whose
# replica died stops holding up the queue within these.
POLL_SECONDS = 5.0
PLACE_GRACE_MS = 2000
# A model's keys, in capacity_acquire's KEYS order.
BUDGET_KEYS = ("inflight", "requests", "paused", "queue", "places", "tokens", "interval")
# OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class CapacitySettings:
    """ECO2_MODEL_* settings of the budget. Off (calls go out as they come) unless a provider limit is configured:
    ECO2_MODEL_MAX_IN_FLIGHT, ECO2_MODEL_REQUESTS_PER_MINUTE or ECO2_MODEL_TOKENS_PER_MINUTE above 0 turns it on."""

    max_in_flight: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    # The share of the in-flight cap new scans (vision) may fill: the rest is kept for work already past vision
    # (answer, chat), so a flood of new scans cannot starve the jobs closest to done.
    new_work_share: float = 0.8
    lease_seconds: float = 120.0
    # The longest a call waits for capacity, on top of the stage's own time budget: long enough for the queue a
    # burst builds at the provider's rate (Services' timeoutSeconds and the Triggers' delivery timeouts include it).
    wait_seconds: float = 240.0
    # A call's tokens are not known before the reply: the request's text at ~4 characters a token, this much per
    # image and this much for the reply.
    image_tokens: int = 765
    reply_tokens: int = 500

    @property
    def enabled(self) -> bool:
        return self.max_in_flight > 0 or self.requests_per_minute > 0 or self.tokens_per_minute > 0

    @property
    def delivery_wait_seconds(self) -> float:
        """What a delivery may spend waiting for capacity: the wait budget when the budget is on, else nothing."""
        return self.wait_seconds if self.enabled else 0.0

    @property
    def request_interval_ms(self) -> float:
        """The configured ms between requests (0: no rate), as capacity_acquire computes it."""
        return 60000 / self.requests_per_minute * 1.002 if self.requests_per_minute > 0 else 0.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CapacitySettings:
        return cls(
            max_in_flight=env_int(env, "ECO2_MODEL_MAX_IN_FLIGHT", cls.max_in_flight, minimum=0),
            requests_per_minute=env_int(env, "ECO2_MODEL_REQUESTS_PER_MINUTE", cls.requests_per_minute, minimum=0),
            tokens_per_minute=env_int(env, "ECO2_MODEL_TOKENS_PER_MINUTE", cls.tokens_per_minute, minimum=0),
            new_work_share=env_float(env, "ECO2_MODEL_NEW_WORK_SHARE", cls.new_work_share, minimum=0.05),
            lease_seconds=env_float(env, "ECO2_MODEL_LEASE_SECONDS", cls.lease_seconds, minimum=1),
            wait_seconds=env_float(env, "ECO2_MODEL_WAIT_SECONDS", cls.wait_seconds, minimum=0),
            image_tokens=env_int(env, "ECO2_MODEL_IMAGE_TOKENS", cls.image_tokens, minimum=0),
            reply_tokens=env_int(env, "ECO2_MODEL_REPLY_TOKENS", cls.reply_tokens, minimum=0),
        )


@dataclass(frozen=True)
class Lease:
    """A taken slot: give it back with Budget.release."""

    model: str
    lease_id: str
    waited_seconds: float
    # Whether an in-flight slot was taken (only with ECO2_MODEL_MAX_IN_FLIGHT): else there is nothing to give back.
    held: bool = True
    # Whether the call queued for it (its job was told it waits, and is told when it stops).
    queued: bool = False


class CapacityObserver(Protocol):
    """Told of the budget's work, for metrics (eco2.observability.FunctionMetrics)."""

    def capacity_waited(self, model: str, seconds: float) -> None: ...
    def slots_changed(self, model: str, delta: int) -> None: ...
    def provider_refused(self, model: str) -> None: ...


def full_jitter(ceiling: float) -> float:
    """A wait drawn uniformly from [0, ceiling]: replicas told the same wait do not come back together."""
    return random.uniform(0.0, max(0.0, ceiling))


def queued_wait(wait: float, ahead: int) -> float:
    """How long a queued call sleeps before asking again. The queue keeps the order, so the wait only needs
    spreading: the call at the head sleeps until its slot; the others at most POLL_SECONDS, with jitter over the
    upper half (equal jitter), so the calls of a burst do not all ask in the same millisecond."""
    if ahead == 0:
        return wait
    return min(wait, POLL_SECONDS) * random.uniform(0.5, 1.0)


def work_class(stage: str, priority: str) -> int:
    """The call's place in the queue: VIP scans first, then work past vision (answer, chat), then new scans."""
    if priority == "high":
        return 0
    return 2 if stage == "vision" else 1


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


def exhausted_for(headers: Mapping[str, str], *, paced_seconds: float = 0.0) -> float | None:
    """Seconds until the provider takes another call, read from a reply's x-ratelimit-* headers when a limit
    (requests or tokens) has 0 remaining; None while both have room (or no headers).

    A request limit refills over its reset time (`x-ratelimit-reset-requests`: until it is whole again), so one
    request comes back after reset / limit. A budget that already spaces its calls that far apart
    (`paced_seconds`) is pacing at the provider's limit, where 0 remaining is the steady state: no pause then.
    """
    longest: float | None = None
    for kind in ("requests", "tokens"):
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() != "0":
            continue
        reset = reset_seconds(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if reset is None:
            continue
        if kind == "requests":
            reset = provider_interval(headers) or reset
            if reset <= paced_seconds:
                continue
        longest = reset if longest is None else max(longest, reset)
    return longest


def provider_interval(headers: Mapping[str, str]) -> float | None:
    """Seconds between requests the provider allows, read off a reply's headers: its request limit refills over
    `x-ratelimit-reset-requests` once used up, so one request every reset / limit; None without both."""
    limit = _count(headers.get("x-ratelimit-limit-requests", ""))
    reset = reset_seconds(headers.get("x-ratelimit-reset-requests", ""))
    if not limit or not reset:
        return None
    return reset / limit


def _count(value: str) -> int:
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return 0


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
        self._model_keys: dict[str, list[str]] = {}

    @property
    def settings(self) -> CapacitySettings:
        return self._settings

    @property
    def wait_seconds(self) -> float:
        return self._settings.wait_seconds

    def _keys(self, model: str) -> list[str]:
        keys = self._model_keys.get(model)
        if keys is None:
            base = f"{self._prefix}:{{{model}}}"
            keys = self._model_keys[model] = [f"{base}:{part}" for part in BUDGET_KEYS]
        return keys

    def cap_for(self, stage: str) -> int:
        """The in-flight cap a call of `stage` may fill: vision (new work) a share of it, the later stages all."""
        s = self._settings
        if stage != "vision" or s.max_in_flight <= 0:
            return s.max_in_flight
        return max(1, int(s.max_in_flight * s.new_work_share))

    def tokens_of(self, text_chars: int, images: int) -> int:
        """A call's tokens as the budget counts them before the reply: its text, its images, room for the reply."""
        s = self._settings
        return text_chars // 4 + images * s.image_tokens + s.reply_tokens

    async def try_acquire(
        self, model: str, call_id: str, *, stage: str = "answer", tokens: int = 0, priority: str | None = None
    ) -> tuple[float, int, float]:
        """Takes a slot under `call_id`: (0.0, 0, 0.0) when taken, else (ms until asking again, calls ahead in the
        queue, ms until its turn at the configured rate), the call keeping its place in the model's queue while it
        asks again in time."""
        s = self._settings
        klass = work_class(stage, CALL_PRIORITY.get() if priority is None else priority)
        taken, wait_ms, ahead, patient_ms = await self._acquire(
            keys=self._keys(model),
            args=[
                call_id,
                int(s.lease_seconds * 1000),
                self.cap_for(stage),
                s.requests_per_minute,
                klass,
                int(POLL_SECONDS * 1000),
                s.tokens_per_minute,
                tokens,
                PLACE_GRACE_MS,
            ],
        )
        return (0.0, 0, 0.0) if int(taken) == 1 else (float(wait_ms), int(ahead), float(patient_ms))

    async def acquire(
        self,
        model: str,
        *,
        wait_seconds: float | None = None,
        stage: str = "answer",
        tokens: int = 0,
        on_wait: Callable[[], Awaitable[None]] | None = None,
    ) -> Lease:
        """A slot, in queue order, within `wait_seconds`. A call whose turn would come later than that even at the
        configured rate answers RateLimited (the broker's 429) at once, leaving its place to the calls behind it; a
        pace learned from a provider's refusals lapses, so it alone never makes a wait hopeless."""
        budget = self._settings.wait_seconds if wait_seconds is None else wait_seconds
        started = time.monotonic()
        deadline = started + budget
        call_id = uuid.uuid4().hex
        queued = False
        try:
            while True:
                wait_ms, ahead, patient_ms = await self.try_acquire(model, call_id, stage=stage, tokens=tokens)
                if wait_ms == 0.0:
                    return self._taken(model, call_id, time.monotonic() - started, queued)
                left = deadline - time.monotonic()
                if patient_ms / 1000 > left or left <= 0:
                    raise RateLimited("no model capacity within the stage's time budget", max(1.0, patient_ms / 1000))
                queued = True
                if on_wait is not None:
                    await on_wait()
                    on_wait = None
                await asyncio.sleep(min(left, queued_wait(wait_ms / 1000, ahead)))
        except BaseException:
            await self._leave(model, call_id)
            raise

    def _taken(self, model: str, call_id: str, waited: float, queued: bool) -> Lease:
        held = self._settings.max_in_flight > 0
        if self._observer is not None:
            self._observer.capacity_waited(model, waited)
            if held:
                self._observer.slots_changed(model, 1)
        return Lease(model, call_id, waited, held, queued)

    async def _leave(self, model: str, call_id: str) -> None:
        """Gives up a place in the queue; if this is lost, the place lapses within POLL_SECONDS by itself."""
        queue, places = self._keys(model)[3:5]
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zrem(queue, call_id)
                pipe.zrem(places, call_id)
                await pipe.execute()
        except (redis.RedisError, OSError):
            log.warning("a model call's place in the capacity queue was not given up; it lapses by itself")

    async def release(self, lease: Lease) -> None:
        """Gives the slot back; a release that is lost is harmless: the lease expires."""
        if not lease.held:
            return
        if self._observer is not None:
            self._observer.slots_changed(lease.model, -1)
        await self._client.zrem(self._keys(lease.model)[0], lease.lease_id)

    async def refused(self, model: str, seconds: float, headers: Mapping[str, str] | None = None) -> None:
        """The provider refused a call (429): counted, the model paused for every replica, and, when the refusal
        shows the provider allows fewer requests than the budget's rate, a longer interval between requests learned
        (capacity_pause: the provider's own, read off its headers, or double the current one when they say nothing).
        A refusal at the budget's own rate (a call that arrived early on the network's jitter) only pauses."""
        if self._observer is not None:
            self._observer.provider_refused(model)
        implied = provider_interval(headers or {})
        learn = -1.0 if implied is None else self._slower_pace_ms(implied)
        await self._pause_for(model, seconds, learn)

    def _slower_pace_ms(self, implied: float) -> float:
        """The ms between requests to learn from the provider's pace (seconds a request): 0 unless it is slower
        than the configured rate (with the same 0.2 % margin)."""
        implied_ms = implied * 1000 * 1.002
        return implied_ms if implied_ms > self._settings.request_interval_ms else 0.0

    async def pause(self, model: str, seconds: float) -> None:
        """Every replica waits `seconds` before its next call to `model`."""
        await self._pause_for(model, seconds, 0.0)

    async def _pause_for(self, model: str, seconds: float, learn: float) -> None:
        keys = self._keys(model)
        pause_key, learned_key = keys[2], keys[6]
        args = [max(1, int(seconds * 1000)), self._settings.request_interval_ms, learn]
        await self._pause(keys=[pause_key, learned_key], args=args)

    async def learn(self, model: str, headers: Mapping[str, str]) -> None:
        """Tightens the shared budget from a reply's x-ratelimit-* headers: a used-up provider limit that refills
        slower than the budget's own pace pauses the model for every replica until the provider takes a call
        again, and the provider's slower pace is learned, so none sends a call the provider would refuse."""
        configured = self._settings.request_interval_ms
        seconds = exhausted_for(headers, paced_seconds=configured / 1000)
        if seconds is not None and seconds > 0:
            implied = provider_interval(headers)
            await self._pause_for(model, seconds, 0.0 if implied is None else self._slower_pace_ms(implied))

    async def in_flight(self, model: str) -> int:
        """Slots of `model` held by live leases (for status and tests)."""
        key = self._keys(model)[0]
        return int(await self._client.zcount(key, f"({int(time.time() * 1000)}", "+inf"))


def model_budget(
    client: aioredis.Redis, settings: CapacitySettings, observer: CapacityObserver | None = None
) -> Budget | None:
    """The process's budget from its ECO2_MODEL_* settings; None (calls go out as they come) when no limit is set."""
    return Budget(client, settings, observer=observer) if settings.enabled else None


def read_budgets(
    client: redis.Redis, settings: CapacitySettings, prefix: str = "eco2:capacity"
) -> list[dict[str, Any]]:
    """Each model's budget as `eco2 status` shows it: slots in use / the cap, calls queued, the interval between
    requests (the learned one when the provider refused calls), the seconds it stays paused. `settings` are the
    ECO2_MODEL_* of the shell running status. Read with a plain client: status is a short-lived command, not a pod."""
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    models = set()
    for raw in client.scan_iter(match=f"{prefix}:{{*}}:*", count=500):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        models.add(key[len(prefix) + 2 : key.rindex("}")])
    budgets = []
    for model in sorted(models):
        inflight, _, paused, queue, _, _, learned = (f"{prefix}:{{{model}}}:{part}" for part in BUDGET_KEYS)
        paused_at = client.get(paused)
        learned_ms = client.get(learned)
        budgets.append(
            {
                "model": model,
                "in_flight": int(client.zcount(inflight, f"({now_ms}", "+inf")),
                "limit": settings.max_in_flight,
                "queued": int(client.zcard(queue)),
                "interval_ms": float(learned_ms) if learned_ms is not None else settings.request_interval_ms,
                "paused_for": max(0, int(paused_at) - now_ms) / 1000 if paused_at is not None else 0.0,
            }
        )
    return budgets


class WaitAnnouncer:
    """Tells a job's SSE stream and GET /result that its model call waits for capacity (no status change)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._script = lua.register(client, "capacity_waiting")

    async def __call__(self, job_id: str, stage: str, model: str) -> None:
        wait = json.dumps({"model": model, "since": round(time.time(), 3)})
        await self._script(keys=[keys.job(job_id), keys.job_events(job_id)], args=[stage, wait, f"{time.time():.6f}"])

    async def ended(self, job_id: str) -> None:
        """The call got its slot: GET /result stops saying it waits."""
        await self._client.hdel(keys.job(job_id), "capacity_wait")
