"""Every Redis key the pack uses, named in one place (each one is written with a TTL but the catalog).

Each family of keys is one line of data: its pattern under `eco2:`, with what it holds (Redis type, content,
TTL) above it. Called with its parts, a family gives the key: `keys.job(job_id)`, `keys.stage_lease(job_id, stage)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "eco2"


@dataclass(frozen=True)
class KeyFamily:
    """`eco2:` + `pattern`, its `{}` filled with the parts in order (`{0}`, `{1}` where the order differs)."""

    pattern: str
    # Parts that come from clients (user ids, idempotency keys): one SHA-256 of them all fills the one `{}`,
    # so a key name stays short and plain.
    hashed: bool = False

    def key(self, *parts: str) -> str:
        filled = (_digest(*parts),) if self.hashed else parts
        return f"{PREFIX}:{self.pattern.format(*filled)}"


class PerId(KeyFamily):
    """A family with one part."""

    def __call__(self, part: str) -> str:
        return self.key(part)


class PerPair(KeyFamily):
    """A family with two parts."""

    def __call__(self, first: str, second: str) -> str:
        return self.key(first, second)


# Hash: status, stage, progress, message, result, error, user, timestamps, and one mark per transition.
job = PerId("job:{}")
# Stream: one entry per stage transition, ids `<seq>-0` so SSE `id:` and Last-Event-ID are the seq.
job_events = PerId("job:{}:events")
# Hash: stage name -> JSON of that stage's output, so a retry never calls the model again.
job_checkpoints = PerId("job:{}:checkpoints")
# String with a short TTL: the one delivery allowed to compute a stage while concurrent ones wait.
stage_lease = PerPair("job:{}:lease:{}")
# Stream per domain (eco2.dead_letters.DOMAINS): every dead-lettered event with its error extensions.
dead_letters = PerId("deadletters:{}")
# Hash: dead-letter stream entry id -> JSON of its replay (attempt, time, outcome); set once per entry.
dead_letter_replays = PerId("deadletters:{}:replays")
# String with a TTL, per (event id, trigger destination): a dead letter recorded once, however often it arrives.
dead_letter_seen = PerPair("deadletter:{1}:{0}")
# String, TTL 30 days: the job whose delivery granted this reward id, so it is passed on once.
reward = PerId("reward:{}")
# String, TTL = the token's remaining lifetime: a revoked JWT id (logout) the gateway refuses.
revoked_token = PerId("auth:revoked:{}")
# String (unix seconds), TTL = the longest life of a token issued before it: the user's tokens issued at or before
# it are refused (eco2 revoke --user).
revoked_user = PerId("auth:revoked-user:{}")
# Hash {tokens, ts}, TTL = time to refill: one user's token bucket at the gateway.
rate_limit = PerId("ratelimit:{}", hashed=True)
# Hash {tokens, ts}, TTL = time to refill: one client address's token bucket at the gateway.
client_rate_limit = PerId("ratelimit-client:{}", hashed=True)
# Sorted set {stream id: deadline}, TTL = the longest stream: one user's open SSE streams on every gateway.
sse_streams = PerId("sse-streams:{}", hashed=True)
# String, TTL 1 h: the first response to a scan submitted with this (user, X-Idempotency-Key).
idempotency = PerPair("idempotency:{}", hashed=True)
# String, TTL 1 h: this (user, X-Idempotency-Key) already paid its rate-limit token; repeats ride free.
idempotency_charge = PerPair("idempotency-charge:{}", hashed=True)
# Stream, short TTL: wakes one gateway process's SSE reader when it starts watching a new job.
gateway_wakeup = PerId("gateway:{}:wakeup")
# String, TTL 60 s: written by a gateway process right before its WAIT (which counts only its own connection's
# writes), so the replicas' acknowledgement of it covers the submit written before it.
replication_mark = PerId("gateway:{}:replicated")
# List, TTL: one user's chat session (user id, session id), oldest turn first, each a JSON {role, content}.
chat_history = PerPair("chat:{}", hashed=True)

# Hash {version, characters}, no TTL (the one key without one: it is the catalog's durable copy).
CHARACTER_CATALOG = f"{PREFIX}:catalog:characters"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()
