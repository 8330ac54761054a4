"""What a final event must be backed by before persist writes it: its job in Redis, the reward's claim, the catalog.

Any pod that reaches the broker could post a well-formed eco2.reward.granted; the rows it asks for are written only
when what the reward stage left in Redis says the same:
- a grant: its reward id is the one of (user, character), the character is in the catalog, and the reward's claim
  (keys.reward, set by the reward stage's `done` transition in the same script) names this job; the job hash, while
  it lives, names the same user and is done;
- a finished scan without a grant (history only): its job hash names the same user and is done.
Anything else is poison (422: dead-lettered, never replayed, nothing written).

Replays: a grant's claim lives 30 days (eco2.functions.reward.REWARD_CLAIM_SECONDS), longer than a dead letter's
7 days (eco2.dead_letters.DEAD_LETTER_TTL_SECONDS), so a genuine grant replayed after its job hash expired (the job
TTL, ECO2_JOB_TTL_SECONDS, 24 h by default) is still written on the claim alone. A history-only event has no claim:
the dead-letter function keeps its job hash as long as its letter (eco2.dead_letters.keep_job_for_replay).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

from eco2 import keys
from eco2.errors import REDIS_TRANSIENT, PoisonEvent, store_call
from eco2.jobs import JobStatus
from eco2.persist.records import Grant, Record
from eco2.rewards import reward_id
from eco2.rules import CharacterCatalog, RuleDataError

log = logging.getLogger("eco2.persist")

# A character id missing from the catalog held re-reads Redis's copy (a newer catalog may name it), at most this
# often: forged events naming made-up characters cost one read a second, not one each.
CATALOG_REFRESH_SECONDS = 1.0


class Unbacked(PoisonEvent, code="unbacked_event"):
    """The event names a job, user or reward that Redis does not back: persist writes nothing for it."""


class KnownCharacters:
    """The character ids of the current catalog: the package's file, or Redis's newer copy (as reward holds it)."""

    def __init__(self, client: aioredis.Redis, initial: CharacterCatalog | None = None) -> None:
        self.client = client
        catalog = initial if initial is not None else CharacterCatalog.load()
        self._version = 0
        self._ids = frozenset(c.character_id for c in catalog.all())
        self._read_at = float("-inf")

    async def contains(self, character_id: str) -> bool:
        if character_id in self._ids:
            return True
        if time.monotonic() - self._read_at >= CATALOG_REFRESH_SECONDS:
            await self.refresh()
        return character_id in self._ids

    async def refresh(self) -> None:
        """Take Redis's copy of the catalog when it is newer than the one held."""
        self._read_at = time.monotonic()
        raw = cast(dict[str, str], await store_call(self.client.hgetall(keys.CHARACTER_CATALOG)))
        try:
            version = int(raw.get("version") or 0)
            if version <= self._version:
                return
            catalog = CharacterCatalog.from_records(json.loads(raw["characters"]))
        except (KeyError, ValueError, TypeError, RuleDataError):
            log.warning("the catalog stored in Redis does not parse; keeping the one held")
            return
        self._version, self._ids = version, frozenset(c.character_id for c in catalog.all())


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What Redis holds for one final event: its job's user and status (None once the hash expired), its claim."""

    user_id: str | None
    status: str | None
    claimed_by: str | None


class Evidence:
    """Checks final events' records against Redis before they are written (`screen`: an Unbacked, 422, each)."""

    def __init__(self, jobs: aioredis.Redis, characters: KnownCharacters) -> None:
        self._jobs = jobs
        self.characters = characters

    async def ping(self) -> bool:
        try:
            return bool(await self._jobs.ping())
        except REDIS_TRANSIENT:
            return False

    async def aclose(self) -> None:
        await self._jobs.aclose()
        if self.characters.client is not self._jobs:
            await self.characters.client.aclose()

    async def screen(self, records: list[Record]) -> list[Unbacked | None]:
        """Each record's refusal (None: backed), from one pipelined round trip for the whole batch (group commit
        calls this once per batch: one Redis call per event cost as much CPU as the rest of the delivery)."""
        facts = await self._facts(records)
        return [await self._refusal(record, known) for record, known in zip(records, facts, strict=True)]

    async def _refusal(self, record: Record, facts: JobFacts) -> Unbacked | None:
        _, user_id = named_job(record)
        grant = record.grant
        if facts.status is not None:
            if facts.user_id != user_id:
                return Unbacked(message="the event names another user than its job's")
            if facts.status != JobStatus.DONE:
                return Unbacked(message="the event's job has not finished")
        if grant is not None:
            return await self._grant_refusal(grant, facts)
        if facts.status is None:
            return Unbacked(message="the event names no known job")
        return None

    async def _grant_refusal(self, grant: Grant, facts: JobFacts) -> Unbacked | None:
        if grant.reward_id != reward_id(grant.user_id, grant.character_id):
            return Unbacked(message="the reward id is not the one of this user and character")
        if not await self.characters.contains(grant.character_id):
            return Unbacked(message="the character is not in the catalog")
        # The claim is keyed by (user, character) and holds the job that earned it: it alone survives the job.
        if facts.claimed_by != grant.job_id:
            return Unbacked(message="no reward of this character was granted to this user by this job")
        return None

    async def _facts(self, records: list[Record]) -> list[JobFacts]:
        pipe = self._jobs.pipeline(transaction=False)
        for record in records:
            pipe.hmget(keys.job(named_job(record)[0]), "user_id", "status")
            if record.grant is not None:
                pipe.get(keys.reward(record.grant.reward_id))
        replies = iter(await store_call(pipe.execute()))
        facts = []
        for record in records:
            user_id, status = next(replies)
            claimed_by = next(replies) if record.grant is not None else None
            facts.append(JobFacts(user_id, status, claimed_by))
        return facts


def named_job(record: Record) -> tuple[str, str]:
    """The (job id, user id) a record names: its history row's, else its grant's."""
    if record.history is not None:
        return record.history.job_id, record.history.user_id
    if record.grant is not None:
        return record.grant.job_id, record.grant.user_id
    return "", ""
