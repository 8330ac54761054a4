"""The gateway's per-process resources: Redis pool, the shared stream reader, the K_SINK client, caches."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from eco2.gateway.auth import Authenticator
from eco2.gateway.hub import StreamHub
from eco2.gateway.idempotency import IdempotencyStore
from eco2.gateway.metrics import GatewayMetrics
from eco2.gateway.probe import ImageProbe
from eco2.gateway.ratelimit import RateLimiter
from eco2.gateway.settings import GatewaySettings
from eco2.gateway.sink import EventSink
from eco2.jobs import JobStore
from eco2.rules import RuleBook

log = logging.getLogger("eco2.gateway")

POOL_CLIENT_NAME = "eco2-gateway"
READER_CLIENT_NAME = "eco2-gateway-reader"
# A request waits this long for a free pooled connection before answering 503.
_POOL_WAIT_SECONDS = 5.0
_READ_MARGIN_SECONDS = 10.0


@dataclass
class GatewayContext:
    settings: GatewaySettings
    store: JobStore
    auth: Authenticator
    limiter: RateLimiter
    idempotency: IdempotencyStore
    hub: StreamHub
    sink: EventSink
    metrics: GatewayMetrics
    categories: list[dict[str, Any]]
    probe: ImageProbe

    @classmethod
    async def create(cls, settings: GatewaySettings) -> GatewayContext:
        url = settings.base.redis_url
        # Bounded: hundreds of SSE clients replaying at once queue for a connection instead of opening hundreds.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.redis_max_connections,
            timeout=_POOL_WAIT_SECONDS,
            decode_responses=True,
            client_name=POOL_CLIENT_NAME,
        )
        client = aioredis.Redis.from_pool(pool)
        # The read timeout must outlast XREAD's BLOCK, or every quiet period ends in a timeout and a reconnect.
        reader = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            single_connection_client=True,
            client_name=READER_CLIENT_NAME,
            socket_timeout=settings.sse_block_ms / 1000 + _READ_MARGIN_SECONDS,
            socket_connect_timeout=_POOL_WAIT_SECONDS,
        )
        metrics = GatewayMetrics()
        hub = StreamHub(
            reader,
            client,
            instance=uuid.uuid4().hex,
            block_ms=settings.sse_block_ms,
            queue_size=settings.sse_queue_size,
            metrics=metrics,
        )
        context = cls(
            settings=settings,
            store=JobStore(client, ttl_seconds=settings.base.job_ttl_seconds),
            auth=Authenticator(settings, client),
            limiter=RateLimiter(
                client,
                burst=settings.rate_limit_burst,
                per_second=settings.rate_limit_per_second,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            ),
            idempotency=IdempotencyStore(client, ttl_seconds=settings.idempotency_ttl_seconds),
            hub=hub,
            # Redirects are never followed: the broker ingress answers directly or not at all.
            sink=EventSink(settings.sink_url, timeout_seconds=settings.sink_timeout_seconds),
            metrics=metrics,
            categories=RuleBook.load().categories(),
            probe=ImageProbe(
                allowlist=settings.image_url_allowlist,
                trusted=settings.image_url_trusted,
                follow=settings.image_probe,
                timeout_seconds=settings.image_probe_timeout_seconds,
                dns_timeout_seconds=settings.dns_timeout_seconds,
            ),
        )
        hub.start()
        if settings.sink_url is None:
            log.warning("K_SINK is not set: every scan submit will answer 503 until it is")
        return context

    async def ready(self) -> bool:
        return await self.store.ping()

    async def aclose(self) -> None:
        await self.hub.aclose()
        await self.sink.aclose()
        await self.probe.aclose()
        await self.store.aclose()
