"""blacklist-sync and catalog-sync: the CloudEvents functions that make Redis the durable truth of the caches.

Fed by a Trigger on their event type (the RabbitmqSource brings the events into the Broker). They answer 202
with no reply; applying an event twice changes nothing (the same key and expiry; an equal catalog version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis
from cloudevents.http import CloudEvent
from redis.exceptions import RedisError

from eco2.adapter import EventFunction
from eco2.cachesync.events import CatalogUpdated, SyncEventType
from eco2.cachesync.handler import decode
from eco2.cachesync.store import store_catalog, store_revocation
from eco2.connections import async_redis
from eco2.errors import PoisonEvent
from eco2.settings import Settings

log = logging.getLogger("eco2.cachesync")


@dataclass
class SyncResources:
    client: aioredis.Redis

    async def ready(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        await self.client.aclose()


async def _setup(settings: Settings) -> SyncResources:
    return SyncResources(async_redis(settings.redis_cache_url, env=settings.connections))


async def apply(event: CloudEvent, resources: SyncResources) -> CloudEvent | None:
    """The function's handler: decode with the replicas' handler, then write Redis."""
    data = event.get_data()
    if not isinstance(data, dict):
        raise PoisonEvent("invalid_data", "event data must be a JSON object")
    decoded = decode(str(event["type"]), data)
    if isinstance(decoded, CatalogUpdated):
        stored, current = await store_catalog(resources.client, decoded)
        log.info("catalog offered", extra={"fields": {"version": decoded.version, "stored": stored, "now": current}})
    else:
        kept = await store_revocation(resources.client, decoded)
        who = {"jti": decoded.jti} if decoded.jti else {"user_id": decoded.user_id, "before": decoded.issued_before}
        log.info("token revoked", extra={"fields": {**who, "kept": kept, "by": str(event["source"])}})
    return None


def sync_function(name: str, accepts: SyncEventType) -> EventFunction[SyncResources]:
    return EventFunction(name, _setup, apply, accepts=accepts.value)
