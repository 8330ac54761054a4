"""Rate limits: per user and per client address (token buckets in Redis, one Lua script), and per-user SSE streams.

The same script settles a submit's idempotency key first, so admitting a submit is one round trip: a repeat
of a submit that already paid rides free (a client retrying on a timeout is never refused as too many; its
job, if created, is the answer), and only a new submit spends a token.
"""

from __future__ import annotations

import ipaddress
import math
import time
import uuid
from dataclasses import dataclass
from enum import Enum

import redis.asyncio as aioredis
from starlette.requests import Request

from eco2 import keys, lua
from eco2.errors import store_call
from eco2.gateway.settings import IPNetwork


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
        self._client = client
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

    async def admit_client(self, address: str, *, burst: int, per_second: float) -> Admission:
        """Spend one token of the client address's bucket (no idempotency key: the user's bucket settled that)."""
        args = [burst, per_second, 1, 0, self._key_ttl]
        verdict, detail = await store_call(self._admit(keys=[keys.client_rate_limit(address), ""], args=args))
        if Verdict(verdict) is Verdict.REFUSED:
            return Admission(Verdict.REFUSED, retry_after=max(1, math.ceil(float(detail))))
        return Admission(Verdict.ALLOWED)

    async def unmark_charge(self, user_id: str, key: str) -> None:
        """Forget that a keyed submit paid, when it was refused after all (by the client limit): its repeat pays."""
        await store_call(self._client.delete(keys.idempotency_charge(user_id, key)))

    async def open_stream(self, user_id: str, *, limit: int, max_seconds: float) -> str | None:
        """Hold one of the user's `limit` SSE stream slots (every replica counts); None when all are held.

        Each slot carries its deadline, so one a crashed process never released lapses by itself. Add, then
        count, in one transaction: two racing opens may both be refused, never both admitted past the limit.
        """
        key, slot, now = keys.sse_streams(user_id), uuid.uuid4().hex, time.time()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {slot: now + max_seconds + _SLOT_GRACE_SECONDS})
            pipe.zcard(key)
            pipe.expire(key, math.ceil(max_seconds + _SLOT_GRACE_SECONDS))
            held = (await store_call(pipe.execute()))[2]
        if int(held) > limit:
            await self.close_stream(user_id, slot)
            return None
        return slot

    async def close_stream(self, user_id: str, slot: str) -> None:
        await store_call(self._client.zrem(keys.sse_streams(user_id), slot))


# How long past a stream's own limit its slot is kept: the stream's last write and its clean-up.
_SLOT_GRACE_SECONDS = 30.0


def client_address(request: Request, trusted: tuple[IPNetwork, ...]) -> str:
    """The caller's address: walking (X-Forwarded-For entries, direct peer) from the right, the first that is
    not a trusted proxy's. Proxies in the cluster (ingress, activator, queue-proxy) each append the address they
    saw, and how many stand in the path varies, so they are recognised by network rather than counted; entries
    left of the first untrusted one are the client's own claims and never read. "unknown" when unreadable."""
    seen = [hop.strip() for header in request.headers.getlist("x-forwarded-for") for hop in header.split(",")]
    seen.append(request.client.host if request.client else "")
    address = "unknown"
    for entry in reversed(seen):
        try:
            parsed = ipaddress.ip_address(entry.strip("[]"))
        except ValueError:
            return "unknown"
        address = str(parsed)
        if not any(parsed in network for network in trusted):
            return address
    return address  # every hop is inside: a caller on the cluster's own network
