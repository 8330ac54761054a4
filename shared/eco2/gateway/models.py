"""The mobile API's request body and response bodies (the contract of domain/system-facts.md)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from eco2.errors import BadRequest, PoisonEvent
from eco2.gateway.ssrf import MAX_URL_LENGTH
from eco2.jobs import TERMINAL_STATUSES

MAX_USER_INPUT = 1000


class ScanRequestBody(BaseModel):
    """POST /api/v1/scan. Unknown fields are ignored, so older and newer apps both keep working."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    image_url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    user_input: str | None = Field(default=None, max_length=MAX_USER_INPUT)
    model: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("image_url", "user_input", "model")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        # JSON may carry lone surrogates; they cannot be stored or sent on, so refuse them here.
        if value is not None:
            value.encode("utf-8")
        return value


def parse_scan_request(body: bytes, allowed_models: tuple[str, ...]) -> ScanRequestBody:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("invalid_json", "the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadRequest("invalid_json", "the body must be a JSON object")
    try:
        scan = ScanRequestBody.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise PoisonEvent("invalid_request", f"the request is invalid: {problems}"[:500]) from None
    if scan.model is not None and scan.model not in allowed_models:
        raise BadRequest("unknown_model", f"model must be one of: {', '.join(allowed_models)}")
    return scan


def accepted(job_id: str) -> dict[str, Any]:
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
