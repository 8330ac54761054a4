"""Event types, their validated data models, and the CloudEvent attribute conventions of the pack."""

from __future__ import annotations

import uuid
import zlib
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from cloudevents.http import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eco2.errors import PoisonEvent

SPECVERSION = "1.0"
DATACONTENTTYPE = "application/json"
# uuid5 namespace for deterministic event ids: the same (job, type) always gets the same id.
_EVENT_ID_NAMESPACE = uuid.UUID("6f1c3f0e-5a0b-4c55-9d47-e5c0a1b2c3d4")


class EventType(StrEnum):
    SCAN_REQUESTED = "eco2.scan.requested"
    SCAN_CLASSIFIED = "eco2.scan.classified"
    SCAN_RULED = "eco2.scan.ruled"
    SCAN_ANSWERED = "eco2.scan.answered"
    REWARD_GRANTED = "eco2.reward.granted"
    CHAT_REQUESTED = "eco2.chat.requested"
    # The job's final event when no reward was granted by it (none earned, or the character already owned).
    SCAN_COMPLETED = "eco2.scan.completed"


class Priority(StrEnum):
    NORMAL = "normal"
    HIGH = "high"


def event_priority(event: CloudEvent) -> Priority:
    """An event's `priority` attribute: normal when it has none (or one the pack does not know)."""
    try:
        return Priority(str(event.get("priority") or Priority.NORMAL.value))
    except ValueError:
        return Priority.NORMAL


# What each function consumes and what it may emit as its reply. The manifest wiring test and the local
# runner read this table; a function's main.py must not emit anything else.
FUNCTION_EVENTS: dict[str, tuple[EventType, tuple[EventType, ...]]] = {
    "vision": (EventType.SCAN_REQUESTED, (EventType.SCAN_CLASSIFIED,)),
    "rules": (EventType.SCAN_CLASSIFIED, (EventType.SCAN_RULED,)),
    "answer": (EventType.SCAN_RULED, (EventType.SCAN_ANSWERED,)),
    # Exactly one of the two per finished job: reward.granted from the delivery that claimed the reward id,
    # scan.completed otherwise (no reward earned, or the character already owned).
    "reward": (EventType.SCAN_ANSWERED, (EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED)),
    # The chat answers into the job's event stream only: nothing follows it.
    "chat": (EventType.CHAT_REQUESTED, ()),
}

# A job's final events: no stage consumes them; the persist function (a sink outside the stage chain, one
# Trigger per type on every priority) writes them to the database (eco2.persist).
TERMINAL_EVENT_TYPES: frozenset[EventType] = frozenset({EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED})

# The model stages' normal-priority Triggers are sharded. One RabbitMQ broker dispatcher holds at most 100 events
# in flight (its AMQP prefetch is fixed at 100, whatever the Trigger's parallelism) and a model call waits
# seconds, so 1,000 scans at once need ten dispatchers per model stage: eventing/triggers-shards.yaml has one
# Trigger per shard value, each filtering on the extension attribute `shard` as well. Every event of the pack
# carries it, derived from its job id, so every emitter agrees and a re-sent event keeps its shard.
SHARDS = 10
SHARDED_FUNCTIONS: tuple[str, ...] = ("vision", "answer")
SHARD_ATTRIBUTE = "shard"


def shard_of(job_id: str) -> str:
    """The job's shard, "0" to str(SHARDS - 1): a stable hash (crc32), the same in every process."""
    return str(zlib.crc32(job_id.encode()) % SHARDS)


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Classification(_Data):
    major_category: str = Field(min_length=1, max_length=64)
    middle_category: str | None = Field(default=None, max_length=64)
    minor_category: str | None = Field(default=None, max_length=128)
    situation_tags: tuple[str, ...] = Field(default=(), max_length=16)


class FinalAnswer(_Data):
    disposal_steps: tuple[str, ...] = Field(max_length=32)
    insufficiencies: tuple[str, ...] = Field(default=(), max_length=32)
    user_answer: str = Field(max_length=8000)


class ScanRequested(_Data):
    """What the gateway sends; every later event carries these fields too, so stages stay stateless."""

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    user_id: str = Field(min_length=1, max_length=128)
    image_url: str = Field(min_length=1, max_length=2048)
    user_input: str | None = Field(default=None, max_length=1000)
    model: str | None = Field(default=None, max_length=64)


class ScanClassified(ScanRequested):
    classification: Classification


class ScanRuled(ScanClassified):
    # None is the explicit "no rule" outcome: the answer stage still answers, the reward stage grants nothing.
    rule_id: str | None


class ScanAnswered(ScanRuled):
    final_answer: FinalAnswer


class GrantedCharacter(_Data):
    character_id: str
    name: str
    middle_category: str


class ScanSummary(_Data):
    """What the scan history keeps of a finished job (both final events carry it)."""

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    user_id: str = Field(min_length=1, max_length=128)
    category: str | None = Field(default=None, max_length=64)  # the major category
    middle_category: str | None = Field(default=None, max_length=64)
    rule_id: str | None = Field(default=None, max_length=128)
    # granted, already_owned, not_recyclable, no_rule, insufficient, no_character
    reward_reason: str = Field(default="granted", min_length=1, max_length=32)
    completed_at: datetime | None = None


class RewardGranted(ScanSummary):
    # reward_id is deterministic per (user, character), so persist can insert … on conflict do nothing.
    reward_id: str
    character: GrantedCharacter


class ChatRequested(_Data):
    """What the gateway sends for POST /api/v1/chat; the answer goes to the job's event stream."""

    job_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    user_id: str = Field(min_length=1, max_length=128)
    session_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    message: str = Field(min_length=1, max_length=1000)
    image_url: str | None = Field(default=None, max_length=2048)


class ScanCompleted(ScanSummary):
    # The character the scan would have granted when the user already owns it (reward_reason already_owned).
    character: GrantedCharacter | None = None


M = TypeVar("M", bound=_Data)

DATA_MODELS: dict[EventType, type[_Data]] = {
    EventType.SCAN_REQUESTED: ScanRequested,
    EventType.SCAN_CLASSIFIED: ScanClassified,
    EventType.SCAN_RULED: ScanRuled,
    EventType.SCAN_ANSWERED: ScanAnswered,
    EventType.REWARD_GRANTED: RewardGranted,
    EventType.CHAT_REQUESTED: ChatRequested,
    EventType.SCAN_COMPLETED: ScanCompleted,
}


def event_id(job_id: str, event_type: str) -> str:
    """Deterministic per (job, type): a redelivered stage emits the same id, so consumers can dedupe."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{job_id}/{event_type}"))


def source_of(function_name: str) -> str:
    return f"/eco2/{function_name}"


def parse_data(event: CloudEvent, model: type[M]) -> M:
    """Validate an event's data against its model; a mismatch is a poison event (422, never retried)."""
    data = event.get_data()
    if not isinstance(data, dict):
        raise PoisonEvent("invalid_data", "event data must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "data" for err in exc.errors()[:5])
        raise PoisonEvent("invalid_data", f"event data failed validation at: {fields}") from None


def new_event(
    event_type: EventType,
    data: _Data,
    *,
    source: str,
    job_id: str,
    parent: CloudEvent | None = None,
) -> CloudEvent:
    """Build an event with the pack's conventions: priority and trace context carried over from `parent`, the
    job's shard."""
    attributes: dict[str, Any] = {
        "specversion": SPECVERSION,
        "type": str(event_type),
        "source": source,
        "subject": job_id,
        "id": event_id(job_id, event_type),
        "datacontenttype": DATACONTENTTYPE,
    }
    if parent is not None:
        for extension in ("priority", "traceparent", "tracestate"):
            value = parent.get(extension)
            if value:
                attributes[extension] = value
    attributes.setdefault("priority", Priority.NORMAL.value)
    attributes[SHARD_ATTRIBUTE] = shard_of(job_id)
    return CloudEvent(attributes, data.model_dump(mode="json"))
