"""Every Redis key the pack uses, named in one place (each one is written with a TTL)."""

from __future__ import annotations

PREFIX = "eco2"


def job(job_id: str) -> str:
    """Hash: status, stage, progress, message, result, error, user, timestamps, and one mark per transition."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """Stream: one entry per stage transition, ids `<seq>-0` so SSE `id:` and Last-Event-ID are the seq."""
    return f"{PREFIX}:job:{job_id}:events"


def job_checkpoints(job_id: str) -> str:
    """Hash: stage name -> JSON of that stage's output, so a retry never calls the model again."""
    return f"{PREFIX}:job:{job_id}:checkpoints"


def stage_lease(job_id: str, stage: str) -> str:
    """String with a short TTL: the one delivery allowed to compute a stage while concurrent ones wait."""
    return f"{PREFIX}:job:{job_id}:lease:{stage}"


def dead_letters() -> str:
    """Stream: every dead-lettered event with its error extensions, for inspection and replay."""
    return f"{PREFIX}:deadletters"


def dead_letter_seen(event_id: str, trigger_dest: str) -> str:
    """String with a TTL: a dead letter recorded once, however often the sink receives it."""
    return f"{PREFIX}:deadletter:{trigger_dest}:{event_id}"
