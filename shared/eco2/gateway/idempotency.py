"""X-Idempotency-Key: the job id derives from (user, key), and the first response is kept (1 h) and replayed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from eco2 import keys
from eco2.errors import BadRequest, store_call

MAX_KEY_LENGTH = 128
_JOB_NAMESPACE = uuid.UUID("3d0f6a2e-9c41-4b7e-a5d2-7e1b0c9f4a58")


def validate_key(raw: str | None) -> str | None:
    """The key as sent, or None when absent; 1-128 visible ASCII characters."""
    if raw is None:
        return None
    if not 0 < len(raw) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in raw):
        raise BadRequest(
            "invalid_idempotency_key",
            f"X-Idempotency-Key must be 1-{MAX_KEY_LENGTH} visible ASCII characters",
        )
    return raw


def job_id_for(user_id: str, key: str | None) -> str:
    """Deterministic per (user, key), so concurrent repeats all name one job; random without a key."""
    if key is None:
        return uuid.uuid4().hex
    return uuid.uuid5(_JOB_NAMESPACE, f"{user_id}\x00{key}").hex


def fingerprint(request: dict[str, Any]) -> str:
    """Tells a true repeat from a different request that reuses the key."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: dict[str, Any]
    fingerprint: str


def decode_stored(data: dict[str, Any]) -> StoredResponse:
    return StoredResponse(int(data["status"]), dict(data["body"]), str(data["fingerprint"]))


class IdempotencyStore:
    def __init__(self, client: aioredis.Redis, *, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    async def get(self, user_id: str, key: str) -> StoredResponse | None:
        raw = await store_call(self._redis.get(keys.idempotency(user_id, key)))
        return decode_stored(json.loads(raw)) if raw else None

    async def put(self, user_id: str, key: str, stored: StoredResponse) -> None:
        """Keep the first response only: a later put for the same key changes nothing."""
        value = json.dumps(
            {"status": stored.status, "body": stored.body, "fingerprint": stored.fingerprint}, ensure_ascii=False
        )
        await store_call(self._redis.set(keys.idempotency(user_id, key), value, nx=True, ex=self._ttl))

    async def wait(self, user_id: str, key: str, *, timeout: float, poll: float = 0.05) -> StoredResponse | None:
        """The first request's response once it is stored, or None if it is not stored in time."""
        deadline = time.monotonic() + timeout
        while True:
            stored = await self.get(user_id, key)
            if stored is not None or time.monotonic() >= deadline:
                return stored
            await asyncio.sleep(poll)
