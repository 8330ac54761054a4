"""Is this token revoked, by its jti or by its user's revocation? The local copy answers; Redis only while the
broker link is down.

- a jti in the local copy (until its token would expire) is revoked, whatever else is down;
- with the consumer live, the copy is complete: a miss is "not revoked", no Redis round trip;
- with the broker unreachable, revocations may be missed, so a miss asks Redis (the durable truth), within
  a short timeout; Redis unreachable too, the copy answers (no 503 for every request).
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from eco2 import keys
from eco2.cachesync.events import SyncEventType, TokenRevoked, amqp_message
from eco2.cachesync.replica import CacheSync
from eco2.cachesync.store import store_revocation
from eco2.errors import store_call

# A revocation found in Redis during an outage is kept locally this long at least (its TTL if longer).
_FOUND_SECONDS = 60.0


class Blacklist:
    def __init__(self, sync: CacheSync, client: aioredis.Redis, *, source: str, leeway_seconds: float = 0.0) -> None:
        self.sync = sync
        self._redis = client
        self._source = source
        self._leeway = leeway_seconds
        self.redis_lookups = 0

    @property
    def revoked(self) -> int:
        return len(self.sync.caches.revoked)

    async def is_revoked(self, jti: str) -> bool:
        if self.sync.settings.redis_per_request:
            return bool(await store_call(self._redis.exists(keys.revoked_token(jti))))
        tokens = self.sync.caches.revoked
        if tokens.contains(jti):
            return True
        if self.sync.live:
            return False
        return await self._ask_redis(jti)

    async def _ask_redis(self, jti: str) -> bool:
        self.redis_lookups += 1
        try:
            ttl_ms = await asyncio.wait_for(
                self._redis.pttl(keys.revoked_token(jti)), self.sync.settings.fallback_timeout_seconds
            )
        except (RedisError, OSError, TimeoutError):
            return False  # both down: the local copy has answered already
        if ttl_ms == -2:
            return False
        seconds = ttl_ms / 1000 if ttl_ms > 0 else _FOUND_SECONDS
        self.sync.caches.revoked.add(jti, time.time() + seconds)
        return True

    async def is_user_revoked(self, user_id: str, issued_at: float) -> bool:
        """Were the user's tokens issued at or before `issued_at` revoked (`eco2 revoke --user`)?"""
        if self.sync.settings.redis_per_request:
            held = await store_call(self._redis.get(keys.revoked_user(user_id)))
            return held is not None and issued_at <= float(held)
        if self.sync.caches.revoked_users.refuses(user_id, issued_at):
            return True
        if self.sync.live:
            return False
        return await self._ask_redis_user(user_id, issued_at)

    async def _ask_redis_user(self, user_id: str, issued_at: float) -> bool:
        self.redis_lookups += 1
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(keys.revoked_user(user_id))
        pipe.pttl(keys.revoked_user(user_id))
        try:
            held, ttl_ms = await asyncio.wait_for(pipe.execute(), self.sync.settings.fallback_timeout_seconds)
        except (RedisError, OSError, TimeoutError):
            return False  # both down: the local copy has answered already
        if held is None:
            return False
        seconds = ttl_ms / 1000 if ttl_ms > 0 else _FOUND_SECONDS
        self.sync.caches.revoked_users.add(user_id, float(held), time.time() + seconds)
        return issued_at <= float(held)

    async def revoke(self, jti: str, user_id: str, expires_at: float) -> bool:
        """Logout: Redis first (the truth), then this process's copy, then the fanout exchange for the others.

        Returns whether the event went out on the exchange; if not, the other replicas still find it in
        Redis at their next warm-up, or at once while their own broker link is down.
        """
        event = TokenRevoked(jti=jti, user_id=user_id, expires_at=expires_at)
        await store_revocation(self._redis, event, leeway_seconds=self._leeway)
        self.sync.caches.revoked.add(jti, expires_at + self._leeway)
        headers, body = amqp_message(SyncEventType.TOKEN_REVOKED, event, source=self._source)
        return await self.sync.publish(SyncEventType.TOKEN_REVOKED, headers, body)
