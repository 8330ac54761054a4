"""The mobile API's request body and response bodies (the contract of domain/system-facts.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eco2.errors import BadRequest, PoisonEvent
from eco2.jobs import TERMINAL_STATUSES
from eco2.rules import CharacterCatalog
from eco2.ssrf import MAX_URL_LENGTH

MAX_USER_INPUT = 1000


class ScanRequest(BaseModel):
    """POST /api/v1/scan. Unknown fields are ignored, so older and newer apps both keep working."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    image_url: str = Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="http(s) URL of the photo; must resolve to a public address",
        examples=["https://93.184.216.34/photos/bottle.png"],
    )
    user_input: str | None = Field(default=None, max_length=MAX_USER_INPUT)
    model: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("image_url", "user_input", "model")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        # JSON may carry lone surrogates; they cannot be stored or sent on, so refuse them here.
        if value is not None:
            value.encode("utf-8")
        return value


B = TypeVar("B", bound=BaseModel)


def parse_body(body: bytes, model: type[B]) -> B:
    """A JSON object body validated by `model`: 400 when not JSON, 422 naming the fields that fail."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("invalid_json", "the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise PoisonEvent("invalid_request", f"the request is invalid: {problems}"[:500]) from None


def parse_scan_request(body: bytes, allowed_models: tuple[str, ...]) -> ScanRequest:
    scan = parse_body(body, ScanRequest)
    if scan.model is not None and scan.model not in allowed_models:
        raise BadRequest("unknown_model", f"model must be one of: {', '.join(allowed_models)}")
    return scan


class ImageUploadRequest(BaseModel):
    """POST /api/v1/images: what the app is about to upload."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    content_type: str = Field(min_length=1, max_length=64, examples=["image/jpeg"])
    size: int = Field(description="bytes; at most 10 MiB", examples=[123456])


class PresignedUpload(BaseModel):
    """How to upload: a multipart/form-data POST to `url` with `fields` first and the photo as `file`."""

    method: Literal["POST"]
    url: str
    fields: dict[str, str]


class ImageUpload(BaseModel):
    """201 to POST /api/v1/images: the store refuses another type, a larger file or another key."""

    upload: PresignedUpload
    image_url: str = Field(description="send as the scan's (or chat's) image_url once uploaded")
    key: str
    expires_in: int


class ChatRequest(BaseModel):
    """POST /api/v1/chat: a message, optionally about an uploaded photo, in a session (new when absent)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    message: str = Field(min_length=1, max_length=MAX_USER_INPUT, examples=["페트병은 어떻게 버려요?"])
    image_url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @field_validator("message", "image_url")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        if value is not None:
            value.encode("utf-8")
        return value


class ChatAccepted(BaseModel):
    """202 to POST /api/v1/chat: the answer streams on `stream_url` (delta events, then done)."""

    job_id: str
    session_id: str
    stream_url: str
    result_url: str
    status: Literal["queued"]


def chat_accepted(job_id: str, job: dict[str, str] | None = None, session_id: str = "") -> dict[str, Any]:
    if job is not None:
        session_id = json.loads(job.get("request") or "{}").get("session_id", "")
    return {
        "job_id": job_id,
        "session_id": session_id,
        "stream_url": f"/api/v1/chat/{job_id}/events",
        "result_url": f"/api/v1/scan/{job_id}/result",
        "status": "queued",
    }


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str
    message: str


class ScanAccepted(BaseModel):
    """202 to POST /api/v1/scan (also to a repeat with the same X-Idempotency-Key)."""

    job_id: str
    stream_url: str
    result_url: str
    status: Literal["queued"]


class CapacityWait(BaseModel):
    """A model call of the job queues for the shared model budget (the provider's limit): nothing failed."""

    model: str
    since: float = Field(description="when the call started waiting (Unix time, seconds)")


class ScanProgress(BaseModel):
    """202 to GET …/result while the scan runs."""

    status: str
    message: str
    current_stage: str
    progress: int = Field(ge=0, le=100)
    waiting_for_capacity: CapacityWait | None = Field(
        default=None, description="set while the current stage's model call waits for model capacity; no status change"
    )


class ScanResult(BaseModel):
    """200 to GET …/result once the scan ended."""

    task_id: str
    status: Literal["done", "failed", "cancelled"]
    message: str
    pipeline_result: dict[str, Any] | None = Field(description="classification, disposal_rules, final_answer")
    reward: dict[str, Any] | None = Field(description="the granted character, or null")
    reward_reason: str | None = Field(description="why a character was or was not granted")
    error: dict[str, Any] | None = Field(description="{code, message} when the scan failed")


class JobState(ScanProgress):
    """200 to DELETE /api/v1/scan/{job_id}."""

    job_id: str


class Category(BaseModel):
    """One entry of GET /api/v1/scan/categories: the shape the Eco² app reads, and a little more."""

    id: str = Field(description="the rule id scans carry")
    name: str = Field(description="the category's own name (the middle category, else the major one)")
    display_name: str
    instructions: list[str] = Field(description="the disposal steps, in order")
    major_category: str
    middle_category: str | None
    display_name_en: str
    recyclable: bool
    summary: str


class CharacterEntry(BaseModel):
    """One collectible character of the catalog."""

    character_id: str
    name: str
    middle_category: str | None = Field(description="the recyclable category that earns it; null for the default")
    is_default: bool = Field(description="granted once, with a user's first scan")
    description: str


class CharacterList(BaseModel):
    """200 to GET /api/v1/characters: the catalog this gateway holds, kept current from the catalog exchange."""

    version: int = Field(description="the catalog version (0: the one shipped with the pack)")
    characters: list[CharacterEntry]


class OwnedCharacter(BaseModel):
    """One character of GET /api/v1/me/characters."""

    character_id: str
    name: str
    middle_category: str
    acquired_at: datetime = Field(
        description="when the scan that granted it finished (UTC); the default character: when it was first seen"
    )
    job_id: str = Field(description="the scan that earned it; `first-sight` for the default character no scan earned")


class CharacterCollection(BaseModel):
    """200 to GET /api/v1/me/characters: the caller's characters, oldest first."""

    characters: list[OwnedCharacter]
    count: int


class ScanHistoryEntry(BaseModel):
    """One finished scan of GET /api/v1/me/scans."""

    job_id: str
    category: str | None = Field(description="the major category the photo was classified as")
    middle_category: str | None
    rule_id: str | None = Field(description="the disposal rule applied, or null")
    outcome: str = Field(description="granted, already_owned, not_recyclable, no_rule, insufficient or no_character")
    character_id: str | None = Field(description="the character granted (or already owned), or null")
    created_at: datetime = Field(description="when the scan finished (UTC)")


class ScanHistoryPage(BaseModel):
    """200 to GET /api/v1/me/scans: newest first; pass next_cursor back as `cursor` for the next page."""

    scans: list[ScanHistoryEntry]
    next_cursor: str | None = Field(description="null on the last page")


class Health(BaseModel):
    status: Literal["ok"]
    function: Literal["gateway"]
    redis: bool = Field(description="whether Redis answers")


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    function: Literal["gateway"]


def categories(book: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule book's categories (RuleBook.categories()) in the app's shape."""
    return [
        {
            "id": entry["rule_id"],
            "name": entry["middle_category"] or entry["major_category"],
            "display_name": entry["display_name"],
            "instructions": list(entry["steps"]),
            **{k: entry[k] for k in ("major_category", "middle_category", "display_name_en", "recyclable", "summary")},
        }
        for entry in book
    ]


def characters(version: int, catalog: CharacterCatalog) -> dict[str, Any]:
    entries = sorted(catalog.all(), key=lambda c: not c.is_default)
    return {"version": version, "characters": [c.model_dump(mode="json") for c in entries]}


def accepted(job_id: str, job: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "stream_url": f"/api/v1/scan/{job_id}/events",
        "result_url": f"/api/v1/scan/{job_id}/result",
        "status": "queued",
    }


def _json_field(job: dict[str, str], name: str) -> Any:
    raw = job.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def is_finished(job: dict[str, str]) -> bool:
    return job.get("status", "") in TERMINAL_STATUSES


def progress(job: dict[str, str]) -> dict[str, Any]:
    """The 202 body of GET …/result while the job runs."""
    return {
        "status": job.get("status", ""),
        "message": job.get("message", ""),
        "current_stage": job.get("stage", ""),
        "progress": int(job.get("progress") or 0),
        "waiting_for_capacity": _json_field(job, "capacity_wait"),
    }


def final(job_id: str, job: dict[str, str]) -> dict[str, Any]:
    """The 200 body of GET …/result once the job is done, failed or cancelled."""
    result = _json_field(job, "result")
    result = result if isinstance(result, dict) else {}
    return {
        "task_id": job_id,
        "status": job.get("status", ""),
        "message": job.get("message", ""),
        "pipeline_result": result.get("pipeline_result"),
        "reward": result.get("reward"),
        # Why no character was granted (or "granted"); beside `reward`, which is null then.
        "reward_reason": result.get("reward_reason"),
        "error": _json_field(job, "error"),
    }


def job_state(job_id: str, job: dict[str, str]) -> dict[str, Any]:
    """The 200 body of DELETE /api/v1/scan/{job_id}."""
    return {"job_id": job_id, **progress(job)}
