"""What persist writes for one final event: a grant (ledger + collection) when one was granted, and a history row;
and a grant alone (the default character on first sight, eco2.default_character)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cloudevents.http import CloudEvent

from eco2.errors import PoisonEvent
from eco2.events import DATA_MODELS, EventType, RewardGranted, ScanCompleted, ScanSummary, parse_data

# The event types persist takes (one Trigger each); both are a job's final event.
PERSISTED_TYPES: tuple[EventType, ...] = (EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED)


@dataclass(frozen=True, slots=True)
class Grant:
    reward_id: str
    user_id: str
    character_id: str
    name: str
    middle_category: str
    job_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class History:
    job_id: str
    user_id: str
    category: str | None
    middle_category: str | None
    rule_id: str | None
    outcome: str
    character_id: str | None
    reward_id: str | None
    at: datetime


# History's columns that are ScanSummary's fields by the same name.
_SUMMARY_COLUMNS = {"job_id", "user_id", "category", "middle_category", "rule_id"}


@dataclass(frozen=True, slots=True)
class Record:
    grant: Grant | None
    history: History | None  # None: a grant no scan earned (no history row)


def record_of(event: CloudEvent, now: datetime | None = None) -> Record:
    """The rows one event writes; an event of another type, or failing its model, is poison (422)."""
    event_type = str(event["type"])
    if event_type not in PERSISTED_TYPES:
        allowed = ", ".join(PERSISTED_TYPES)
        raise PoisonEvent("unexpected_type", f"persist accepts {allowed}, not {event_type[:80]}")
    data = parse_data(event, DATA_MODELS[EventType(event_type)])
    assert isinstance(data, ScanSummary)
    at = (data.completed_at or now or datetime.now(UTC)).astimezone(UTC)
    grant = None
    character = data.character if isinstance(data, RewardGranted | ScanCompleted) else None
    reward_id = data.reward_id if isinstance(data, RewardGranted) else None
    if isinstance(data, RewardGranted):
        c = data.character
        grant = Grant(data.reward_id, data.user_id, c.character_id, c.name, c.middle_category, data.job_id, at)
    # The history row keeps the summary's own fields as they are, and what the job ended with.
    summary = data.model_dump(include=_SUMMARY_COLUMNS)
    character_id = character.character_id if character else None
    history = History(**summary, outcome=data.reward_reason, character_id=character_id, reward_id=reward_id, at=at)
    return Record(grant, history)


def merge(records: list[Record]) -> tuple[list[Grant], list[History]]:
    """The rows of a batch, one per key: a statement may not touch a row twice (a granted history row wins)."""
    grants: dict[str, Grant] = {}
    histories: dict[str, History] = {}
    for record in records:
        if record.grant is not None:
            grants.setdefault(record.grant.reward_id, record.grant)
        history = record.history
        if history is None:
            continue
        seen = histories.get(history.job_id)
        if seen is None or (history.outcome == "granted" and seen.outcome != "granted"):
            histories[history.job_id] = history
    return list(grants.values()), list(histories.values())
