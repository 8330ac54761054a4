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
    """Blacklist the token (or the user's tokens issued before the cut-off) until it would expire (+ leeway);
    False when it has expired already (nothing kept)."""
    until_ms = math.ceil((event.expires_at + leeway_seconds) * 1000)
    if until_ms <= time.time() * 1000:
        return False
    if event.jti is None:
        assert event.issued_before is not None  # the model holds one or the other
        script = lua.register(client, "revoked_user_store")
        await store_call(script(keys=[keys.revoked_user(event.user_id)], args=[repr(event.issued_before), until_ms]))
        return True
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
    return [(jti, until) for jti, _, until in _scan(client, keys.revoked_token(""), with_value=False)]


def revoked_users(client: redis.Redis) -> list[tuple[str, float, float]]:
    """Every user-wide revocation: (user, tokens issued at or before this are refused, when the entry expires)."""
    return [(user, float(value), until) for user, value, until in _scan(client, keys.revoked_user(""), with_value=True)]


def _scan(client: redis.Redis, prefix: str, *, with_value: bool) -> list[tuple[str, str, float]]:
    """(the key's id, its value if asked, when it expires) for every key under `prefix`: SCAN, then one pipeline."""
    names = [str(name) for name in client.scan_iter(match=prefix + "*", count=_SCAN_COUNT)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
        if with_value:
            pipe.get(name)
    now = time.time()
    replies = pipe.execute()
    step = 2 if with_value else 1
    entries: list[tuple[str, str, float]] = []
    for index, name in enumerate(names):
        ttl = replies[index * step]
        value = str(replies[index * step + 1]) if with_value else ""
        if isinstance(ttl, int) and ttl > 0 and (not with_value or replies[index * step + 1] is not None):
            entries.append((name[len(prefix) :], value, now + ttl / 1000))
    return entries


def stored_catalog(client: redis.Redis) -> CatalogUpdated | None:
    """The catalog Redis holds, or None when no update was ever stored."""
    raw: dict[str, Any] = client.hgetall(keys.CHARACTER_CATALOG)  # type: ignore[assignment]
    if not raw.get("version") or not raw.get("characters"):
        return None
    return CatalogUpdated(version=int(raw["version"]), characters=json.loads(raw["characters"]))
