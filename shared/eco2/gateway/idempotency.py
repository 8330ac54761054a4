"""X-Idempotency-Key: the job id derives from (user, key), so the job itself is the record a repeat is answered from."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from eco2.errors import BadRequest

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
