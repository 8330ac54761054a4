"""The cache-sync consumer every replica runs: one exclusive, auto-delete queue bound to the fanout exchanges.

aio-pika, as a task in the process's event loop: connect, declare the queue and bind it, warm the caches up
from Redis (SCAN the blacklist, load the catalog), then consume, feeding each event to the shared handler
(eco2.cachesync.handler). Not pika in a thread, the design's first choice: with the event loop saturated
(a busy gateway or authz) a thread waits for the GIL at every step, and a revocation took up to ~1 s to be
applied, against ~60 ms in the loop (p99; tests.benchmarks.cachesync_consumers, docs/benchmarks.md).
The queue is bound before the warm-up, so nothing published in between is missed.
A lost connection is retried with exponential backoff; until it is back (and the caches warmed again, since
the exclusive queue and what it held are gone) `live` is False and callers ask Redis instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aio_pika
from aio_pika import DeliveryMode, ExchangeType
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from eco2.cachesync import store
from eco2.cachesync.events import Exchange, SyncEventType, attributes_of, json_object
from eco2.cachesync.handler import LocalCaches, catalog_of, decode
from eco2.connections import ConnectionSettings, amqp_connect, sync_redis
from eco2.env import env_float
from eco2.errors import Eco2Error
from eco2.lifecycle import cancel_and_wait

log = logging.getLogger("eco2.cachesync")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass(frozen=True)
class SyncSettings:
    amqp_url: str = DEFAULT_AMQP_URL
    redis_url: str = "redis://127.0.0.1:6379/0"
    blacklist_exchange: str = Exchange.BLACKLIST.value
    catalog_exchange: str = Exchange.CATALOG.value
    # While the broker link is down a lookup asks Redis; past this it answers from the cache instead.
    fallback_timeout_seconds: float = 0.25
    backoff_seconds: float = 0.2
    backoff_cap_seconds: float = 5.0
    tick_seconds: float = 0.2  # how often the consumer looks up (a closed connection, purge of expired entries)
    # ECO2_BLACKLIST_LOOKUP=redis: ask Redis on every request, as before the cache (the benchmark's baseline).
    redis_per_request: bool = False
    # TLS and time limits of its Redis and AMQP connections, from the same environment.
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str], redis_url: str) -> SyncSettings:
        return cls(
            amqp_url=env.get("AMQP_URL") or cls.amqp_url,
            redis_url=redis_url,
            blacklist_exchange=env.get("ECO2_BLACKLIST_EXCHANGE") or cls.blacklist_exchange,
            catalog_exchange=env.get("ECO2_CATALOG_EXCHANGE") or cls.catalog_exchange,
            fallback_timeout_seconds=env_float(
                env, "ECO2_CACHE_FALLBACK_TIMEOUT_SECONDS", cls.fallback_timeout_seconds, minimum=0.01
            ),
            backoff_cap_seconds=env_float(env, "ECO2_CACHE_BACKOFF_CAP_SECONDS", cls.backoff_cap_seconds, minimum=0.1),
            redis_per_request=(env.get("ECO2_BLACKLIST_LOOKUP") or "cache").lower() == "redis",
            connections=ConnectionSettings.from_env(env),
        )

    def exchange(self, kind: SyncEventType) -> str:
        return self.blacklist_exchange if kind is SyncEventType.TOKEN_REVOKED else self.catalog_exchange


class CacheSync:
    """Keeps `caches` current for the event kinds given; one per process, started once, stopped at shutdown."""

    def __init__(
        self, settings: SyncSettings, caches: LocalCaches, kinds: frozenset[SyncEventType], *, name: str
    ) -> None:
        self.settings = settings
        self.caches = caches
        self.kinds = kinds
        self.name = name
        self.warmed = threading.Event()  # the first warm-up from Redis is done: the process may report ready
        self.live = False  # consuming, and warmed since this connection began: the caches are current
        self.events_applied = 0
        self.sessions = 0  # broker connections that reached `live` (1 + the reconnects)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: AbstractChannel | None = None
        self._redis = sync_redis(settings.redis_url, env=settings.connections, socket_timeout=2.0)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming in the running event loop (call from a coroutine)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"cachesync-{self.name}")

    async def wait_warm(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.warmed.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.warmed.is_set()

    async def stop(self) -> None:
        self._stopping.set()
        await cancel_and_wait(self._task)
        self._task = None
        self._redis.close()

    # -- the consumer -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.settings.backoff_seconds
        while not self._stopping.is_set():
            try:
                await self._session()
                delay = self.settings.backoff_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker's, the socket's or Redis's: all mean "try again later"
                log.warning("cache sync: %s; retrying in %.1f s", type(exc).__name__, delay)
            self.live = False
            if not self.warmed.is_set():
                # No broker yet: warm up from Redis alone, so lookups have the cache to fall back on.
                with contextlib.suppress(Exception):
                    await self._warm()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.settings.backoff_cap_seconds)

    async def _session(self) -> None:
        connection = await amqp_connect(
            self.settings.amqp_url,
            env=self.settings.connections,
            client_properties={"connection_name": f"eco2-cachesync {self.name}"},
        )
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            for kind in sorted(self.kinds):
                exchange = await channel.declare_exchange(
                    self.settings.exchange(kind), ExchangeType.FANOUT, durable=True
                )
                await queue.bind(exchange)
            await queue.consume(self._on_message, no_ack=True)
            await self._warm()
            self._channel = channel
            self.live = True
            self.sessions += 1
            log.info("cache sync live", extra={"fields": {"queue": queue.name, "revoked": len(self.caches.revoked)}})
            while not self._stopping.is_set() and not connection.is_closed and not channel.is_closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.settings.tick_seconds)
                self.caches.revoked.purge()
                self.caches.revoked_users.purge()
            if not self._stopping.is_set():
                raise ConnectionError("the broker closed the connection")
        finally:
            self.live = False
            self._channel = None
            with contextlib.suppress(Exception):
                await connection.close()

    async def _warm(self) -> None:
        started = time.perf_counter()
        if SyncEventType.TOKEN_REVOKED in self.kinds:
            self.caches.revoked.merge(await asyncio.to_thread(store.revoked_entries, self._redis))
            self.caches.revoked_users.merge(await asyncio.to_thread(store.revoked_users, self._redis))
        if SyncEventType.CATALOG_UPDATED in self.kinds:
            stored = await asyncio.to_thread(store.stored_catalog, self._redis)
            if stored is not None:
                self.caches.catalog.offer(stored.version, catalog_of(stored))
        self.warmed.set()
        log.info("cache sync warmed up", extra={"fields": {"seconds": round(time.perf_counter() - started, 4)}})

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        attributes = attributes_of(message.headers)
        event_type = attributes.get("type") or _type_of_exchange(self.settings, message.exchange or "")
        try:
            self.caches.apply(decode(event_type, json_object(message.body)))
            self.events_applied += 1
        except Eco2Error as exc:
            log.warning("cache sync: event dropped: %s", exc.message, extra={"fields": {"type": event_type}})

    # -- publishing (logout) ------------------------------------------------------------------------------

    async def publish(self, kind: SyncEventType, headers: dict[str, str], body: bytes, timeout: float = 2.0) -> bool:
        """Put an event on the kind's fanout exchange over this consumer's connection; False if it is down."""
        channel = self._channel
        if channel is None or not self.live:
            return False
        message = aio_pika.Message(
            body, headers=dict(headers), content_type="application/json", delivery_mode=DeliveryMode.PERSISTENT
        )
        try:
            exchange = await channel.get_exchange(self.settings.exchange(kind), ensure=False)
            await asyncio.wait_for(exchange.publish(message, routing_key=""), timeout)
        except Exception as exc:
            log.warning("cache sync: publish failed: %s", type(exc).__name__)
            return False
        return True


def _type_of_exchange(settings: SyncSettings, exchange: str) -> str:
    """A message without a type header: the type its exchange carries."""
    for kind in SyncEventType:
        if settings.exchange(kind) == exchange:
            return kind.value
    return ""
