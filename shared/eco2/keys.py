"""Every Redis key the pack uses, named in one place (each one is written with a TTL but the catalog)."""

from __future__ import annotations

import hashlib

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


def dead_letters(domain: str) -> str:
    """Stream per domain (eco2.deadletter.DOMAINS): every dead-lettered event with its error extensions."""
    return f"{PREFIX}:deadletters:{domain}"


def dead_letter_replays(domain: str) -> str:
    """Hash: dead-letter stream entry id -> JSON of its replay (attempt, time, outcome); set once per entry."""
    return f"{PREFIX}:deadletters:{domain}:replays"


def dead_letter_seen(event_id: str, trigger_dest: str) -> str:
    """String with a TTL: a dead letter recorded once, however often the sink receives it."""
    return f"{PREFIX}:deadletter:{trigger_dest}:{event_id}"


def reward(reward_id: str) -> str:
    """String, TTL 30 days: the job whose delivery granted this reward id, so it is passed on once."""
    return f"{PREFIX}:reward:{reward_id}"


def revoked_token(jti: str) -> str:
    """String, TTL = the token's remaining lifetime: a revoked JWT id (logout) the gateway refuses."""
    return f"{PREFIX}:auth:revoked:{jti}"


def character_catalog() -> str:
    """Hash {version, characters}, no TTL (the one key without one: it is the catalog's durable copy)."""
    return f"{PREFIX}:catalog:characters"


def rate_limit(user_id: str) -> str:
    """Hash {tokens, ts}, TTL = time to refill: one user's token bucket at the gateway."""
    return f"{PREFIX}:ratelimit:{_digest(user_id)}"


def idempotency(user_id: str, key: str) -> str:
    """String, TTL 1 h: the first response to a scan submitted with this (user, X-Idempotency-Key)."""
    return f"{PREFIX}:idempotency:{_digest(user_id, key)}"


def idempotency_charge(user_id: str, key: str) -> str:
    """String, TTL 1 h: this (user, X-Idempotency-Key) already paid its rate-limit token; repeats ride free."""
    return f"{PREFIX}:idempotency-charge:{_digest(user_id, key)}"


def gateway_wakeup(instance: str) -> str:
    """Stream, short TTL: wakes one gateway process's SSE reader when it starts watching a new job."""
    return f"{PREFIX}:gateway:{instance}:wakeup"


def chat_history(user_id: str, session_id: str) -> str:
    """List, TTL: one user's chat session, oldest turn first, each a JSON {role, content}."""
    return f"{PREFIX}:chat:{_digest(user_id, session_id)}"


def _digest(*parts: str) -> str:
    # User ids and idempotency keys come from clients: hash them so a key name stays short and plain.
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
