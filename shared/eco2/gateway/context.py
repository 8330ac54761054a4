"""The gateway's per-process resources: Redis pool, the shared stream reader, the K_SINK client, caches."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from eco2.cachesync.blacklist import Blacklist
from eco2.cachesync.process import BOTH, start_sync
from eco2.cachesync.replica import CacheSync
from eco2.connections import async_redis, async_redis_pool
from eco2.gateway import models
from eco2.gateway.auth import Authenticator
from eco2.gateway.hub import StreamHub
from eco2.gateway.metrics import GatewayMetrics
from eco2.gateway.outbox import Outbox
from eco2.gateway.probe import ImageProbe
from eco2.gateway.ratelimit import RateLimiter
from eco2.gateway.settings import GatewaySettings
from eco2.gateway.sink import EventSink
from eco2.gateway.sweeper import Sweeper
from eco2.jobs import JobStore
from eco2.rules import RuleBook
from eco2.sender_auth import SenderCredential
from eco2.sink import Sink, SinkFactory
from eco2.storage import Storage

log = logging.getLogger("eco2.gateway")

POOL_CLIENT_NAME = "eco2-gateway"
READER_CLIENT_NAME = "eco2-gateway-reader"


def client_names(instance: str) -> tuple[str, str]:
    """This process's Redis client names (pool, stream reader): CLIENT LIST tells the gateways on one Redis apart."""
    return f"{POOL_CLIENT_NAME}-{instance}", f"{READER_CLIENT_NAME}-{instance}"


_READER_CONNECT_SECONDS = 5.0
_READ_MARGIN_SECONDS = 10.0
_WARM_WAIT_SECONDS = 5.0


@dataclass
class GatewayContext:
    settings: GatewaySettings
    store: JobStore
    auth: Authenticator
    limiter: RateLimiter
    hub: StreamHub
    sink: Sink | None  # None when K_SINK is not set (and the runtime is not celery): every submit answers 503
    outbox: Outbox | None
    sweeper: Sweeper | None
    metrics: GatewayMetrics
    categories: list[dict[str, Any]]
    probe: ImageProbe
    caches: CacheSync  # the blacklist and the catalog, current from the fanout exchanges
    # The photo store (presigned uploads, ownership of image URLs); None when none is configured.
    storage: Storage | None = None
    # The client of ECO2_REDIS_CACHE_URL when it names another server than REDIS_URL (closed with the rest).
    cache_redis: aioredis.Redis | None = None

    @classmethod
    async def create(
        cls, settings: GatewaySettings, env: Mapping[str, str] | None = None, runtime_sink: SinkFactory | None = None
    ) -> GatewayContext:
        """`runtime_sink`: the sink of the runtime the scans run on, when it is not the broker (K_SINK)."""
        url = settings.base.redis_url
        pool_name, reader_name = client_names(settings.instance)
        # Bounded: hundreds of SSE clients replaying at once queue for a connection instead of opening hundreds.
        env = os.environ if env is None else env
        client = async_redis_pool(
            url,
            env=env,
            max_connections=settings.redis_max_connections,
            timeout=settings.redis_pool_wait_seconds,
            client_name=pool_name,
        )
        # The read timeout must outlast XREAD's BLOCK, or every quiet period ends in a timeout and a reconnect.
        reader = async_redis(
            url,
            env=env,
            single_connection_client=True,
            client_name=reader_name,
            socket_timeout=settings.sse_block_ms / 1000 + _READ_MARGIN_SECONDS,
            socket_connect_timeout=_READER_CONNECT_SECONDS,
        )
        # The caches' durable copy may live on its own server (ECO2_REDIS_CACHE_URL).
        cache_url = settings.base.redis_cache_url
        cache_client = client if cache_url == url else async_redis(cache_url, env=env)
        metrics = GatewayMetrics()
        hub = StreamHub(
            reader,
            client,
            instance=settings.instance,
            block_ms=settings.sse_block_ms,
            queue_size=settings.sse_queue_size,
            metrics=metrics,
        )
        sink, outbox, sweeper = _delivery(settings, client, metrics, env, runtime_sink)
        caches = start_sync(env, cache_url, BOTH, name=f"gateway-{settings.instance}")
        blacklist = Blacklist(caches, cache_client, source="/eco2/gateway", leeway_seconds=settings.jwt_leeway_seconds)
        context = cls(
            settings=settings,
            store=JobStore(client, ttl_seconds=settings.base.job_ttl_seconds),
            auth=Authenticator(settings, blacklist),
            limiter=RateLimiter(
                client,
                burst=settings.rate_limit_burst,
                per_second=settings.rate_limit_per_second,
                idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            ),
            hub=hub,
            sink=sink,
            outbox=outbox,
            sweeper=sweeper,
            metrics=metrics,
            categories=models.categories(RuleBook.load().categories()),
            probe=ImageProbe(settings.images),
            caches=caches,
            storage=Storage(settings.base.storage) if settings.base.storage else None,
            cache_redis=None if cache_client is client else cache_client,
        )
        hub.start()
        # Requests wait for nothing: readiness says when the warm-up is done. A short wait here serves most starts.
        await caches.wait_warm(_WARM_WAIT_SECONDS)
        if sweeper is not None:
            sweeper.start()
        return context

    async def ready(self) -> bool:
        # Ready once the caches were warmed up from Redis (a revoked token is refused from the first request).
        return self.caches.warmed.is_set() and await self.store.ping()

    async def aclose(self) -> None:
        await self.caches.stop()
        if self.sweeper is not None:
            await self.sweeper.aclose()
        await self.hub.aclose()
        if self.sink is not None:
            await self.sink.aclose()
        await self.probe.aclose()
        await self.store.aclose()
        if self.cache_redis is not None:
            await self.cache_redis.aclose()


def _sink(settings: GatewaySettings, env: Mapping[str, str], runtime_sink: SinkFactory | None) -> Sink | None:
    """The runtime's sink when it gives one (the Celery chain's publisher), else the K_SINK client."""
    given = runtime_sink(env, settings.sink_timeout_seconds) if runtime_sink is not None else None
    if given is not None:
        return given
    if settings.sink_url is None:
        log.warning("K_SINK is not set: every scan submit will answer 503 until it is")
        return None
    credential = SenderCredential.from_env(env)
    return EventSink(settings.sink_url, timeout_seconds=settings.sink_timeout_seconds, credential=credential)


def _delivery(
    settings: GatewaySettings,
    client: aioredis.Redis,
    metrics: GatewayMetrics,
    env: Mapping[str, str],
    runtime_sink: SinkFactory | None,
) -> tuple[Sink | None, Outbox | None, Sweeper | None]:
    """The sink, the outbox in front of it and its sweeper; none of them without a sink."""
    sink = _sink(settings, env, runtime_sink)
    if sink is None:
        return None, None, None
    outbox = Outbox(client, sink.url, lease_seconds=settings.outbox_lease_seconds)
    sweeper = Sweeper(
        outbox,
        sink,
        metrics,
        interval_seconds=settings.outbox_sweep_seconds,
        send_timeout_seconds=settings.outbox_send_timeout_seconds,
        backoff_seconds=settings.outbox_backoff_seconds,
        backoff_cap_seconds=settings.outbox_backoff_cap_seconds,
    )
    return sink, outbox, sweeper
