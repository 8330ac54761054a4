"""Replay of dead letters: re-send what failed for a transient cause, reopening its job first.

A recorded letter (eco2.functions.dead_letter) is replayed when its cause was transient — a 5xx, a 429, a 408, or no
response at all (knativeerrorcode 0 or empty: a timeout, a dropped connection, RabbitMQ's delivery limit) — at
most `max_attempts` times per event, each attempt after a longer wait (`delay * 4^n` from the letter's record).
A poison letter (any other 4xx) is never replayed: the same event would be refused again; nor is an event
posted to the sink by hand (no error extensions at all).

Replaying the live work of a failed job first reopens the job (JobStore.reopen: `failed → queued` on its stream,
so SSE shows it), then clears the letter's recorded mark (a second failure is recorded again), then sends the
event to K_SINK (the broker's ingress) as the gateway does. The attempt number rides along as the extension
`eco2replayattempt`, so a letter of a replayed event knows how often it was tried. Each stream entry is claimed
once (HSETNX), so the PingSource tick and an operator's `eco2 dlq replay` never replay one letter twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.adapter import EventFunction
from eco2.connections import Source as ConnectionSource
from eco2.connections import http_timeout
from eco2.dead_letters import (
    DEAD_LETTER_TTL_SECONDS,
    DOMAINS,
    ERROR_EXTENSIONS,
    FAILED_STAGE,
    WAITING_STAGE,
    fail_job,
    live_job,
    seen_key,
)
from eco2.env import env_float, env_int
from eco2.errors import NotFound, TransientError, store_call
from eco2.jobs import JobStore, TransitionOutcome
from eco2.sender_auth import SenderCredential
from eco2.settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("eco2.functions.replay")

ATTEMPT_EXTENSION = "eco2replayattempt"
TRANSIENT_4XX = frozenset({408, 429})
REOPEN_MESSAGE = "다시 처리하고 있어요"
READ_LIMIT = 10_000


class Outcome(StrEnum):
    SENT = "sent"  # re-sent to the broker (its job reopened first, if it had one)
    POISON = "poison"  # a 4xx: never replayed
    EXHAUSTED = "exhausted"  # replayed max_attempts times already
    NOT_YET = "not_yet"  # its next attempt is not due yet
    CLAIMED = "claimed"  # this entry was replayed (or skipped) before
    SUPERSEDED = "superseded"  # its job is no longer failed at that stage: nothing to replay
    SEND_FAILED = "send_failed"  # the broker did not take it; the job failed again, the letter stays replayable


@dataclass(frozen=True, slots=True)
class Letter:
    """One recorded dead letter: its stream entry, the event's attributes (with knativeerror*) and data."""

    domain: str
    entry_id: str
    attributes: dict[str, str]
    data: object
    recorded_at: float

    @property
    def ref(self) -> str:
        return f"{self.domain}/{self.entry_id}"

    @property
    def code(self) -> int:
        raw = self.attributes.get("knativeerrorcode", "").strip()
        return int(raw) if raw.isdigit() else 0

    @property
    def transient(self) -> bool:
        """A broker gave up on it (it carries the error extensions) for a cause that may pass: 5xx, 429, 408,
        or no response (code 0 or none: Knative sets no code when the subscriber never answered)."""
        if not any(name in self.attributes for name in ("knativeerrorcode", "knativeerrordest")):
            return False  # posted to the sink by hand, not dead-lettered by a broker: nothing says it may pass
        return self.code == 0 or self.code >= 500 or self.code in TRANSIENT_4XX

    @property
    def attempt(self) -> int:
        """How many times this event was replayed before it was dead-lettered this time."""
        raw = self.attributes.get(ATTEMPT_EXTENSION, "0")
        return int(raw) if raw.isdigit() else 0

    def event(self) -> CloudEvent:
        """The event as first sent, without the error extensions, carrying its next attempt number."""
        attributes: dict[str, Any] = {k: v for k, v in self.attributes.items() if k not in ERROR_EXTENSIONS}
        attributes[ATTEMPT_EXTENSION] = str(self.attempt + 1)
        return CloudEvent(attributes, cast(Any, self.data))


@dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    delay_seconds: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        return cls(
            max_attempts=env_int(env, "ECO2_REPLAY_MAX_ATTEMPTS", cls.max_attempts, minimum=0),
            delay_seconds=env_float(env, "ECO2_REPLAY_DELAY_SECONDS", cls.delay_seconds, minimum=0),
        )

    def due_at(self, letter: Letter) -> float:
        return letter.recorded_at + self.delay_seconds * 4.0**letter.attempt

    def check(self, letter: Letter, *, now: float | None = None) -> Outcome | None:
        """Why this letter may not be replayed now (None: it may); `now=None` skips the wait."""
        if not letter.transient:
            return Outcome.POISON
        if letter.attempt >= self.max_attempts:
            return Outcome.EXHAUSTED
        if now is not None and now < self.due_at(letter):
            return Outcome.NOT_YET
        return None


@dataclass(frozen=True, slots=True)
class Result:
    letter: Letter
    outcome: Outcome
    detail: str = ""


def parse_entry(domain: str, entry_id: str, fields: Mapping[str, str]) -> Letter | None:
    """A stream entry as a Letter; None for one that does not parse (never fatal)."""
    try:
        attributes = json.loads(fields.get("attributes", ""))
        data = json.loads(fields.get("data") or "null")
    except (TypeError, ValueError):
        return None
    if not isinstance(attributes, dict) or "id" not in attributes or "type" not in attributes:
        return None
    try:
        at = float(fields.get("recorded_at") or int(entry_id.split("-", 1)[0]) / 1000)
    except ValueError:
        at = 0.0
    return Letter(domain, entry_id, {k: str(v) for k, v in attributes.items()}, data, at)


async def read_letters(redis: aioredis.Redis, domain: str | None = None, *, limit: int = READ_LIMIT) -> list[Letter]:
    """Recorded letters of one domain (or all), oldest first."""
    letters: list[Letter] = []
    for name in (domain,) if domain else DOMAINS:
        entries = await store_call(redis.xrange(keys.dead_letters(name), count=limit))
        for entry_id, fields in cast(list[tuple[str, dict[str, str]]], entries or []):
            letter = parse_entry(name, entry_id, fields)
            if letter is not None:
                letters.append(letter)
    return sorted(letters, key=lambda letter: letter.recorded_at)


async def find_letter(redis: aioredis.Redis, ref: str) -> Letter:
    """A letter by `domain/entry-id`, or by entry id or event id alone (searched in every domain)."""
    domain, _, entry = ref.rpartition("/")
    for letter in await read_letters(redis, domain or None):
        if entry in (letter.entry_id, letter.attributes.get("id")):
            return letter
    raise NotFound("dead_letter_not_found", f"no recorded dead letter {ref!r}")


async def replays(redis: aioredis.Redis, domain: str) -> dict[str, dict[str, Any]]:
    """entry id -> what its replay did, for one domain."""
    raw = cast(dict[str, str], await store_call(redis.hgetall(keys.dead_letter_replays(domain))))
    return {entry: json.loads(value) for entry, value in raw.items()}


class Replayer:
    """Replays letters into the broker through `sink_url`; the job store reopens their jobs."""

    def __init__(
        self,
        store: JobStore,
        http: httpx.AsyncClient | None,
        sink_url: str,
        policy: Policy,
        connections: ConnectionSource = None,
        credential: SenderCredential | None = None,
    ) -> None:
        """Without `http`, the replayer builds its own client at its first send (time limits from `connections`),
        and closes it in `aclose`. `credential`: what the broker asks of a sender (eco2.sender_auth)."""
        self.store = store
        self._http = http
        self._connections = connections
        self._owns_http = http is None
        self.sink_url = sink_url
        self.policy = policy
        self._credential = credential or SenderCredential()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def redis(self) -> aioredis.Redis:
        return self.store.redis

    async def replay_due(self, domain: str | None = None, *, wait: bool = True) -> list[Result]:
        """Replay every letter that may be replayed (now, or when its wait is over if `wait`)."""
        results: list[Result] = []
        for name in (domain,) if domain else DOMAINS:
            done = await replays(self.redis, name)
            for letter in await read_letters(self.redis, name):
                if letter.entry_id in done:
                    continue
                results.append(await self.replay(letter, now=time.time() if wait else None))
        return results

    async def replay(self, letter: Letter, *, now: float | None = None) -> Result:
        refused = self.policy.check(letter, now=now)
        if refused is not None:
            return Result(letter, refused)
        if not await self._claim(letter):
            return Result(letter, Outcome.CLAIMED)
        job_id = live_job(letter.attributes)
        if job_id is not None:
            reopened = await self.store.reopen(
                job_id,
                failed_at=FAILED_STAGE[letter.attributes["type"]],
                wait_at=WAITING_STAGE[letter.attributes["type"]],
                message=REOPEN_MESSAGE,
                data={"reopened": {"attempt": letter.attempt + 1, "letter": letter.ref}},
            )
            if reopened.outcome is not TransitionOutcome.APPLIED:
                await self._note(letter, Outcome.SUPERSEDED)
                return Result(letter, Outcome.SUPERSEDED, f"job {reopened.status or 'missing'} at {reopened.stage}")
        await store_call(self.redis.delete(seen_key(letter.attributes)))
        problem = await self._send(letter)
        if problem is None:
            await self._note(letter, Outcome.SENT)
            return Result(letter, Outcome.SENT)
        await store_call(self.redis.hdel(keys.dead_letter_replays(letter.domain), letter.entry_id))
        if job_id is not None:
            user_id = str(letter.data.get("user_id", "")) if isinstance(letter.data, dict) else ""
            await fail_job(
                self.store, job_id, user_id, letter.attributes["type"], letter.attributes["knativeerrorcode"]
            )
        return Result(letter, Outcome.SEND_FAILED, problem)

    async def purge(self, older_than_seconds: float, domain: str | None = None) -> int:
        """Delete letters recorded more than `older_than_seconds` ago; how many went."""
        cutoff_ms = int((time.time() - older_than_seconds) * 1000)
        removed = 0
        for name in (domain,) if domain else DOMAINS:
            removed += int(
                await store_call(self.redis.xtrim(keys.dead_letters(name), minid=f"{cutoff_ms}-0", approximate=False))
            )
        return removed

    async def _claim(self, letter: Letter) -> bool:
        record = json.dumps({"outcome": "replaying", "attempt": letter.attempt + 1, "at": time.time()})
        replays_key = keys.dead_letter_replays(letter.domain)
        claimed = bool(await store_call(self.redis.hsetnx(replays_key, letter.entry_id, record)))
        await store_call(self.redis.expire(replays_key, DEAD_LETTER_TTL_SECONDS))
        return claimed

    async def _note(self, letter: Letter, outcome: Outcome) -> None:
        record = json.dumps({"outcome": outcome.value, "attempt": letter.attempt + 1, "at": time.time()})
        await store_call(self.redis.hset(keys.dead_letter_replays(letter.domain), letter.entry_id, record))

    async def _send(self, letter: Letter) -> str | None:
        # Imported at the first send: most ticks find nothing to replay, and httpx is ~5 MB and ~40 ms of start-up.
        import httpx

        if self._http is None:
            self._http = httpx.AsyncClient(timeout=http_timeout(self._connections))
        headers, body = to_binary(letter.event())
        try:
            response = await self._http.post(
                self.sink_url, headers=dict(headers) | self._credential.headers(), content=body
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}"
        return None if response.is_success else f"HTTP {response.status_code}"


PING_TYPE = "dev.knative.sources.ping"


@dataclass(slots=True)
class ReplayContext:
    """The replay function's resources: the job store and the replayer sending to K_SINK."""

    replayer: Replayer | None  # None without K_SINK: every tick answers 503 (retried) until it is set
    store: JobStore

    @classmethod
    async def create(cls, settings: Settings, env: Mapping[str, str] | None = None) -> ReplayContext:
        env = os.environ if env is None else env
        store = JobStore.from_url(
            settings.redis_url, ttl_seconds=settings.job_ttl_seconds, connections=settings.connections
        )
        sink = (env.get("K_SINK") or "").strip()
        credential = SenderCredential.from_env(env)
        replayer = (
            Replayer(store, None, sink, Policy.from_env(env), settings.connections or env, credential) if sink else None
        )
        return cls(replayer, store)

    async def aclose(self) -> None:
        if self.replayer is not None:
            await self.replayer.aclose()
        await self.store.aclose()

    async def ready(self) -> bool:
        return await self.store.ping()


async def on_tick(event: CloudEvent, ctx: ReplayContext) -> CloudEvent | None:
    """One PingSource tick: replay every due letter of every domain; replies nothing."""
    if ctx.replayer is None:
        raise TransientError("sink_unavailable", "the replay function has no broker to send to (K_SINK)")
    results = await ctx.replayer.replay_due()
    counts = Counter(result.outcome.value for result in results)
    if counts:
        log.info("dead letters replayed", extra={"fields": dict(counts)})
    return None


def function() -> EventFunction[ReplayContext]:
    """functions/replay: fed by the PingSource of eventing/pingsource.yaml."""
    return EventFunction("replay", ReplayContext.create, on_tick, accepts=PING_TYPE)
