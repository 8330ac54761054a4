"""pika in a thread (the design's first choice) against aio-pika in the event loop (eco2.cachesync.replica, what
the pack uses): publish → applied.

Part of `python -m tests.benchmarks.cachesync`. Both consumers run in this one process, on their own exclusive
queues bound to the same fanout exchange, and stamp the moment each revocation is applied to their copy. Once
with the event loop idle, once with it busy as a serving process's is (2 ms slices of CPU back to back, the
way a saturated authz process runs its requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any

import aio_pika
import pika

from eco2.cachesync.events import SyncEventType, TokenRevoked, attributes_of, json_object
from eco2.cachesync.handler import CatalogCache, LocalCaches, RevokedTokens, SyncEvent, decode
from eco2.cachesync.process import BLACKLIST
from eco2.cachesync.replica import CacheSync, SyncSettings
from eco2_tools.bench.report import Row, sample_row
from tests.cachesync.support import AMQP_URL, Exchanges, new_token, publish_on
from tests.support import REDIS_TEST_URL, wait_for

BUSY_SLICE_SECONDS = 0.002


class StampedCaches(LocalCaches):
    """A copy that remembers when each jti was applied."""

    def __init__(self) -> None:
        super().__init__(RevokedTokens(), CatalogCache())
        self.applied: dict[str, float] = {}

    def apply(self, event: SyncEvent) -> None:
        super().apply(event)
        if isinstance(event, TokenRevoked) and event.jti is not None:
            self.applied[event.jti] = time.perf_counter()


async def busy_loop() -> None:
    while True:
        until = time.perf_counter() + BUSY_SLICE_SECONDS
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0)


class PikaThread:
    """The pika consumer this pack had first: a BlockingConnection in a daemon thread feeding the same handler."""

    def __init__(self, exchange: str, caches: LocalCaches) -> None:
        self.caches = caches
        self.ready = threading.Event()
        self._stopping = threading.Event()
        self._exchange = exchange
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.exchange_declare(self._exchange, "fanout", durable=True)
        channel.queue_bind(queue, self._exchange)
        channel.basic_consume(queue, self._on_message, auto_ack=True)
        self.ready.set()
        while not self._stopping.is_set():
            connection.process_data_events(time_limit=0.2)
        connection.close()

    def _on_message(self, _channel: Any, _method: Any, properties: Any, body: bytes) -> None:
        self.caches.apply(decode(attributes_of(properties.headers).get("type", ""), json_object(body)))

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)


async def consumer_rows(rounds: int) -> list[Row]:
    exchanges = Exchanges.fresh()
    settings = SyncSettings(amqp_url=AMQP_URL, redis_url=REDIS_TEST_URL, blacklist_exchange=exchanges.blacklist)
    threaded = StampedCaches()
    pika_thread = PikaThread(exchanges.blacklist, threaded)
    in_loop = StampedCaches()
    sync = CacheSync(settings, in_loop, BLACKLIST, name="bench-aio-pika")
    sync.start()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        await wait_for(lambda: _true(sync.live and pika_thread.ready.is_set()), timeout=10, what="consumers live")
        publisher = await connection.channel()
        rows: list[Row] = []
        for busy in (False, True):
            load = asyncio.create_task(busy_loop()) if busy else None
            try:
                pika_times, aio_times = await _rounds(publisher, exchanges.blacklist, rounds, threaded, in_loop)
            finally:
                if load is not None:
                    load.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await load
            state = "event loop busy" if busy else "event loop idle"
            rows.append(sample_row(f"consumer: pika thread, {state}", pika_times, note="publish → applied"))
            note = "publish → applied (what the pack uses)"
            rows.append(sample_row(f"consumer: aio-pika in the loop, {state}", aio_times, note=note))
        return rows
    finally:
        await connection.close()
        await sync.stop()
        await asyncio.to_thread(pika_thread.stop)


async def _rounds(
    channel: aio_pika.abc.AbstractChannel, exchange: str, rounds: int, *copies: StampedCaches
) -> tuple[list[float], ...]:
    samples: tuple[list[float], ...] = tuple([] for _ in copies)
    for _ in range(rounds):
        token = new_token()
        started = time.perf_counter()
        await publish_on(channel, exchange, SyncEventType.TOKEN_REVOKED, token.revoked())
        await _until_applied(copies, token.jti)
        for copy, times in zip(copies, samples, strict=True):
            times.append(copy.applied[token.jti] - started)
    return samples


async def _until_applied(copies: Iterable[StampedCaches], jti: str) -> None:
    async def all_have() -> bool:
        return all(jti in copy.applied for copy in copies)

    await wait_for(all_have, timeout=5, interval=0.001, what="both applied")


async def _true(value: bool) -> bool:
    return value
