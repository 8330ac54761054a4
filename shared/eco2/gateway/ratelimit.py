"""Per-user rate limit: a token bucket in Redis, refilled continuously, checked and spent in one Lua script."""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from eco2 import keys
from eco2.gateway.errors import guarded

# KEYS: bucket hash. ARGV: capacity, refill per second, cost. Redis's clock, so every replica agrees.
# Returns {allowed 0|1, seconds to wait as a string} (Lua numbers would be truncated to integers).
_TAKE = """
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1]) or capacity
local last = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local allowed, wait = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int  # whole seconds, at least 1 when refused


class RateLimiter:
    def __init__(self, client: aioredis.Redis, *, burst: int, per_second: float) -> None:
        self._take = client.register_script(_TAKE)
        self._burst = burst
        self._rate = per_second

    async def take(self, user_id: str, cost: int = 1) -> Decision:
        allowed, wait = await guarded(self._take(keys=[keys.rate_limit(user_id)], args=[self._burst, self._rate, cost]))
        return Decision(bool(int(allowed)), 0 if int(allowed) else max(1, math.ceil(float(wait))))
