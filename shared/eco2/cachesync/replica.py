"""The cache-sync consumer every replica runs: one exclusive, auto-delete queue bound to the fanout exchanges.

pika (the design's package) in a daemon thread: connect, declare the queue and bind it, warm the caches up
from Redis (SCAN the blacklist, load the catalog), then consume, feeding each event to the shared handler
(eco2.cachesync.handler). The queue is bound before the warm-up, so nothing published in between is missed.
A lost connection is retried with exponential backoff; until it is back (and the caches warmed again, since
the exclusive queue and what it held are gone) `live` is False and callers ask Redis instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pika
import pika.channel
import pika.spec
import redis

from eco2.cachesync import store
from eco2.cachesync.events import Exchange, SyncEventType, attributes_of, json_object
from eco2.cachesync.handler import LocalCaches, catalog_of, decode
from eco2.errors import Eco2Error
from eco2.settings import env_float

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
    tick_seconds: float = 0.2  # how often the thread looks up from consuming (stop, purge of expired entries)
    # ECO2_BLACKLIST_LOOKUP=redis: ask Redis on every request, as before the cache (the benchmark's baseline).
    redis_per_request: bool = False

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
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._redis = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=2.0)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"cachesync-{self.name}", daemon=True)
            self._thread.start()

    async def wait_warm(self, timeout: float) -> bool:
        return await asyncio.to_thread(self.warmed.wait, timeout)

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None
        self._redis.close()

    # -- the thread ---------------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.settings.backoff_seconds
        while not self._stopping.is_set():
            try:
                self._session()
                delay = self.settings.backoff_seconds
            except Exception as exc:  # pika's, the socket's or Redis's: all mean "try again later"
                log.warning("cache sync: %s; retrying in %.1f s", type(exc).__name__, delay)
            self.live = False
            if not self.warmed.is_set():
                # No broker yet: warm up from Redis alone, so lookups have the cache to fall back on.
                with contextlib.suppress(Exception):
                    self._warm()
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, self.settings.backoff_cap_seconds)

    def _session(self) -> None:
        params = pika.URLParameters(self.settings.amqp_url)
        params.client_properties = {"connection_name": f"eco2-cachesync {self.name}"}
        params.socket_timeout = 2.0
        params.heartbeat = 10
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            for kind in sorted(self.kinds):
                exchange = self.settings.exchange(kind)
                channel.exchange_declare(exchange, "fanout", durable=True)
                channel.queue_bind(queue, exchange)
            channel.basic_consume(queue, self._on_message, auto_ack=True)
            self._warm()
            self._connection, self._channel = connection, channel
            self.live = True
            self.sessions += 1
            log.info("cache sync live", extra={"fields": {"queue": queue, "revoked": len(self.caches.revoked)}})
            while not self._stopping.is_set():
                connection.process_data_events(time_limit=self.settings.tick_seconds)
                self.caches.revoked.purge()
        finally:
            self.live = False
            self._connection = self._channel = None
            with contextlib.suppress(Exception):
                connection.close()

    def _warm(self) -> None:
        started = time.perf_counter()
        if SyncEventType.TOKEN_REVOKED in self.kinds:
            self.caches.revoked.merge(store.revoked_entries(self._redis))
        if SyncEventType.CATALOG_UPDATED in self.kinds:
            stored = store.stored_catalog(self._redis)
            if stored is not None:
                self.caches.catalog.offer(stored.version, catalog_of(stored))
        self.warmed.set()
        log.info("cache sync warmed up", extra={"fields": {"seconds": round(time.perf_counter() - started, 4)}})

    def _on_message(
        self, _channel: Any, method: pika.spec.Basic.Deliver, properties: pika.spec.BasicProperties, body: bytes
    ) -> None:
        attributes = attributes_of(properties.headers)
        event_type = attributes.get("type") or _type_of_exchange(self.settings, method.exchange)
        try:
            self.caches.apply(decode(event_type, json_object(body)))
            self.events_applied += 1
        except Eco2Error as exc:
            log.warning("cache sync: event dropped: %s", exc.message, extra={"fields": {"type": event_type}})

    # -- publishing (logout) ------------------------------------------------------------------------------

    async def publish(self, kind: SyncEventType, headers: dict[str, str], body: bytes, timeout: float = 2.0) -> bool:
        """Put an event on the kind's fanout exchange over this thread's connection; False if it is down."""
        connection = self._connection
        if connection is None or not self.live:
            return False
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def send() -> None:
            try:
                properties = pika.BasicProperties(content_type="application/json", headers=headers, delivery_mode=2)
                self._channel.basic_publish(self.settings.exchange(kind), "", body, properties)
                done.set_result(None)
            except Exception as exc:
                done.set_exception(exc)

        try:
            connection.add_callback_threadsafe(send)
            await asyncio.wait_for(asyncio.wrap_future(done), timeout)
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
