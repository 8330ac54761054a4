"""One Redis reader per gateway process for all SSE clients: XREAD BLOCK over every watched job stream.

Clients subscribe to a job; one task reads the new entries of all watched streams on one dedicated
connection and copies each into the subscribers' bounded in-process queues. A client too slow to keep up
is dropped: its stream ends and it reconnects with Last-Event-ID, missing nothing. A new job to watch
wakes the blocked reader through a per-process wake-up stream, so live events never wait for the timeout.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from eco2 import keys
from eco2.gateway.metrics import GatewayMetrics
from eco2.jobs import StreamEvent, stream_event
from eco2.lifecycle import cancel_and_wait

log = logging.getLogger("eco2.gateway.hub")

_ENTRIES_PER_READ = 100
_WAKE_TTL_SECONDS = 3600


class Subscription:
    """One SSE client's view of one job: a bounded queue of stream events; None means "stream over"."""

    def __init__(self, job_id: str, size: int) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(size)
        self.dropped = False

    def offer(self, event: StreamEvent) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        # Make room for the end marker; what is discarded the client gets back by resuming with Last-Event-ID.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self) -> StreamEvent | None:
        return await self._queue.get()


@dataclass
class _Watch:
    last_seq: int
    subscribers: set[Subscription] = field(default_factory=set)


class StreamHub:
    def __init__(
        self,
        reader: aioredis.Redis,
        writer: aioredis.Redis,
        *,
        instance: str,
        block_ms: int,
        queue_size: int,
        metrics: GatewayMetrics,
    ) -> None:
        self._reader = reader  # one dedicated connection, used by the reader task only
        self._writer = writer  # the shared pool, for the wake-up XADD
        self._wake_key = keys.gateway_wakeup(instance)
        self._wake_last = "0-0"
        self._block_ms = block_ms
        self._queue_size = queue_size
        self._metrics = metrics
        self._watches: dict[str, _Watch] = {}
        self._changed = asyncio.Event()
        self._blocked = False
        self._wake_pending = False
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def subscribers(self) -> int:
        return sum(len(w.subscribers) for w in self._watches.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="eco2-gateway-stream-reader")

    async def aclose(self) -> None:
        # A flag as well as cancel(): redis-py can turn a cancellation mid-read into a reply or a TimeoutError.
        self._closing = True
        self._changed.set()
        await cancel_and_wait(self._task)
        self._task = None
        self.end_streams()
        self._watches.clear()
        await self._reader.aclose()
        self._metrics.reader_connections.set(0)
        self._metrics.watched_streams.set(0)

    def end_streams(self) -> None:
        """End every open SSE stream now (shutdown): each client resumes, on another replica, with Last-Event-ID."""
        for watch in list(self._watches.values()):
            for subscription in list(watch.subscribers):
                subscription.end()

    async def subscribe(self, job_id: str, after_seq: int) -> Subscription:
        """Start receiving the job's entries after `after_seq` (or after what the reader already passed)."""
        subscription = Subscription(job_id, self._queue_size)
        watch = self._watches.get(job_id)
        new = watch is None
        if watch is None:
            watch = self._watches[job_id] = _Watch(after_seq)
            self._metrics.watched_streams.set(len(self._watches))
        watch.subscribers.add(subscription)
        if new:
            await self._wake()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        watch = self._watches.get(subscription.job_id)
        if watch is None:
            return
        watch.subscribers.discard(subscription)
        if not watch.subscribers:
            del self._watches[subscription.job_id]
            self._metrics.watched_streams.set(len(self._watches))

    async def _wake(self) -> None:
        self._changed.set()
        if not self._blocked or self._wake_pending:
            return  # the reader builds its next XREAD from the current watches anyway
        self._wake_pending = True
        try:
            async with self._writer.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=True)
                pipe.expire(self._wake_key, _WAKE_TTL_SECONDS)
                await pipe.execute()
        except redis.exceptions.RedisError:
            # The reader still picks the new job up when its block times out.
            log.warning("could not wake the stream reader")

    async def _run(self) -> None:
        backoff = 0.2
        while not self._closing:
            if not self._watches:
                self._changed.clear()
                await self._changed.wait()
                continue
            jobs = {keys.job_events(job_id): job_id for job_id in self._watches}
            streams: dict[Any, Any] = {key: f"{self._watches[j].last_seq}-0" for key, j in jobs.items()}
            streams[self._wake_key] = self._wake_last
            self._blocked = True
            try:
                reply = await self._reader.xread(streams, count=_ENTRIES_PER_READ, block=self._block_ms)
            except redis.exceptions.RedisError as exc:
                if self._closing:
                    return
                self._metrics.reader_connections.set(0)
                log.warning("stream reader failed, retrying", extra={"fields": {"error": type(exc).__name__}})
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            finally:
                self._blocked = self._wake_pending = False
            if self._closing:
                return
            backoff = 0.2
            self._metrics.reader_connections.set(1)
            self._fan_out(jobs, reply)

    def _fan_out(self, jobs: dict[str, str], reply: Any) -> None:
        for key, entries in reply.items() if isinstance(reply, dict) else reply or []:
            if key == self._wake_key:
                self._wake_last = entries[-1][0]
                continue
            watch = self._watches.get(jobs.get(key, ""))
            if watch is None:
                continue
            for entry_id, fields in entries:
                watch.last_seq = max(watch.last_seq, int(str(entry_id).split("-", 1)[0]))
                try:
                    event = stream_event(fields)
                except (KeyError, ValueError):
                    log.warning("skipped a malformed stream entry", extra={"fields": {"entry": str(entry_id)}})
                    continue
                for subscription in list(watch.subscribers):
                    if not subscription.offer(event):
                        self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        self.unsubscribe(subscription)
        subscription.dropped = True
        subscription.end()
        self._metrics.sse_dropped.inc()
        log.info("dropped a slow SSE client", extra={"fields": {"job_id": subscription.job_id}})
