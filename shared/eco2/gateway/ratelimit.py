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

from eco2 import keys
from eco2.errors import store_call

# KEYS: bucket hash, charge marker. ARGV: capacity, refill per second, cost, has key (0|1),
# key TTL. Redis's clock, so every replica agrees. Returns {verdict, seconds to wait as a string} (Lua
# numbers would be truncated to integers). A refused first submit un-marks its charge, so its
# next repeat pays again.
_ADMIT = """
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local keyed = ARGV[4] == '1'
if keyed and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[5]) then return {'paid', ''} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or capacity
local last = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local verdict, wait = 'allowed', 0
if tokens >= cost then
  tokens = tokens - cost
else
  verdict, wait = 'refused', (cost - tokens) / rate
  if keyed then redis.call('DEL', KEYS[2]) end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {verdict, tostring(wait)}
"""


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
        self._admit = client.register_script(_ADMIT)
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
