"""Redis, the durable truth of the caches: revoked tokens (one key each, TTL until expiry) and the catalog.

Written by the sync functions (and logout), read by every replica at warm-up, and per request only while a
replica's broker link is down.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from eco2 import keys, lua
from eco2.cachesync.events import CatalogUpdated, TokenRevoked
from eco2.errors import store_call

_SCAN_COUNT = 1000


async def store_revocation(client: aioredis.Redis, event: TokenRevoked, *, leeway_seconds: float = 0.0) -> bool:
    """Blacklist the token until it would expire (+ leeway); False when it has expired already (nothing kept)."""
    until_ms = math.ceil((event.expires_at + leeway_seconds) * 1000)
    if until_ms <= time.time() * 1000:
        return False
    value = json.dumps({"user_id": event.user_id, "expires_at": event.expires_at})
    await store_call(client.set(keys.revoked_token(event.jti), value, pxat=until_ms))
    return True


async def store_catalog(client: aioredis.Redis, event: CatalogUpdated) -> tuple[bool, int]:
    """Offer a catalog version: (whether it was stored, the version Redis holds now)."""
    characters = json.dumps(event.characters, ensure_ascii=False, separators=(",", ":"))
    script = lua.register(client, "catalog_offer")
    applied, current = await store_call(script(keys=[keys.CHARACTER_CATALOG], args=[event.version, characters]))
    return bool(applied), int(current)


def revoked_entries(client: redis.Redis) -> list[tuple[str, float]]:
    """Every blacklisted jti with when its entry expires (SCAN, then PTTL in one pipeline)."""
    prefix = keys.revoked_token("")
    names = [str(name) for name in client.scan_iter(match=prefix + "*", count=_SCAN_COUNT)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
    now = time.time()
    entries: list[tuple[str, float]] = []
    for name, ttl in zip(names, pipe.execute(), strict=True):
        if isinstance(ttl, int) and ttl > 0:
            entries.append((name[len(prefix) :], now + ttl / 1000))
    return entries


def stored_catalog(client: redis.Redis) -> CatalogUpdated | None:
    """The catalog Redis holds, or None when no update was ever stored."""
    raw: dict[str, Any] = client.hgetall(keys.CHARACTER_CATALOG)  # type: ignore[assignment]
    if not raw.get("version") or not raw.get("characters"):
        return None
    return CatalogUpdated(version=int(raw["version"]), characters=json.loads(raw["characters"]))
