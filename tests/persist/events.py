"""Final events as the reward stage sends them, what it leaves in Redis beside them (the job done, the reward's
claim), and a delivery helper that retries like the broker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.events import EventType, GrantedCharacter, RewardGranted, ScanCompleted, new_event
from eco2.functions.reward import REWARD_CLAIM_SECONDS
from eco2.jobs import Claim, JobStatus, JobStore, Stage, TransitionOutcome
from eco2.rewards import reward_id
from eco2.rules import CharacterCatalog

# Character ids of the package's catalog that scans earn (persist writes a grant only for a character the catalog
# has), and its default character (the gateway grants it on a user's first read: eco2.default_character).
CATALOG_IDS = tuple(c.character_id for c in CharacterCatalog.load().all() if not c.is_default)
DEFAULT_ID = CharacterCatalog.load().default().character_id


def granted(user: str, character: str, job: str, **overrides: Any) -> CloudEvent:
    data = RewardGranted(
        job_id=job,
        user_id=user,
        category="재활용폐기물",
        middle_category="무색페트병",
        rule_id="recyclable_clear_pet",
        completed_at=overrides.pop("completed_at", datetime.now(UTC)),
        reward_id=overrides.pop("reward_id", reward_id(user, character)),
        character=GrantedCharacter(
            character_id=character, name=overrides.pop("name", f"name-{character}"), middle_category="무색페트병"
        ),
    )
    return new_event(EventType.REWARD_GRANTED, data, source="/eco2/reward", job_id=job)


def completed(user: str, job: str, reason: str = "not_recyclable", **overrides: Any) -> CloudEvent:
    data = ScanCompleted(
        job_id=job,
        user_id=user,
        category="일반쓰레기",
        rule_id=None,
        reward_reason=reason,
        completed_at=overrides.pop("completed_at", datetime.now(UTC)),
    )
    return new_event(EventType.SCAN_COMPLETED, data, source="/eco2/reward", job_id=job)


async def back(store: JobStore, event: CloudEvent) -> CloudEvent:
    """Leave in Redis what the reward stage leaves before it sends `event`: the job, done (as its user's), and a
    grant's claim naming the job, set by the same transition. The event, unchanged."""
    data: dict[str, Any] = event.get_data()  # type: ignore[assignment]
    job, user = data["job_id"], data["user_id"]
    claim = None
    if event["type"] == EventType.REWARD_GRANTED:
        claim = Claim(keys.reward(data["reward_id"]), job, REWARD_CLAIM_SECONDS)
    await store.create(job, user)
    done = await store.transition(job, user, Stage.DONE, JobStatus.DONE, claim=claim)
    assert done.outcome is TransitionOutcome.APPLIED
    return event


async def deliver(http: httpx.AsyncClient, url: str, event: CloudEvent) -> int:
    headers, body = to_binary(event)
    return (await http.post(url, headers=headers, content=body)).status_code


async def deliver_until_accepted(
    http: httpx.AsyncClient, url: str, event: CloudEvent, *, deadline: float, statuses: list[int]
) -> None:
    """As the broker does: redeliver on 5xx (or a refused connection) until a 2xx, or fail at `deadline`."""
    while True:
        try:
            status = await deliver(http, url, event)
        except httpx.TransportError:
            status = 0
        statuses.append(status)
        if 200 <= status < 300:
            return
        assert status == 0 or status >= 500, f"event {event['id']} answered {status}"
        if time.monotonic() > deadline:
            raise AssertionError(f"event {event['id']} still not accepted ({status})")
        await asyncio.sleep(0.05)
