"""Per-user rate limit: a token bucket in Redis, refilled continuously, checked and spent in one Lua script.

The same script settles a submit's idempotency key first, so admitting a submit is one round trip: a repeat
of a submit that already paid rides free (a client retrying on a timeout is never refused as too many; its
job, if created, is the answer), and only a new submit spends a token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis

from eco2 import keys, lua
from eco2.errors import store_call


class Verdict(Enum):
    ALLOWED = "allowed"  # a token was spent
    PAID = "paid"  # a repeat of a submit that already spent its token (its job may exist, or be in flight)
    REFUSED = "refused"  # no token left


@dataclass(frozen=True, slots=True)
class Admission:
    verdict: Verdict
    retry_after: int = 0  # whole seconds, at least 1 when refused


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, burst: int, per_second: float, idempotency_ttl_seconds: int) -> None:
        self._admit = lua.register(client, "ratelimit_admit")
        self._burst = burst
        self._rate = per_second
        self._key_ttl = idempotency_ttl_seconds

    async def admit(self, user_id: str, key: str | None = None, cost: int = 1) -> Admission:
        """Settle the idempotency key (if any) and the user's bucket in one round trip."""
        keyed = key is not None
        redis_keys = [keys.rate_limit(user_id), keys.idempotency_charge(user_id, key) if key is not None else ""]
        args = [self._burst, self._rate, cost, int(keyed), self._key_ttl]
        verdict, detail = await store_call(self._admit(keys=redis_keys, args=args))
        admission = Verdict(verdict)
        if admission is Verdict.REFUSED:
            return Admission(admission, retry_after=max(1, math.ceil(float(detail))))
        return Admission(admission)
