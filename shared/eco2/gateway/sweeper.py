"""The outbox sweeper: one task per gateway process re-sends due outbox entries until the broker takes them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from eco2.capacity import full_jitter
from eco2.errors import StoreUnavailable
from eco2.gateway.metrics import GatewayMetrics
from eco2.gateway.outbox import Outbox, Pending
from eco2.sink import SendOutcome, Sink

log = logging.getLogger("eco2.gateway.outbox")

BATCH = 50


@dataclass
class Sweeper:
    outbox: Outbox
    sink: Sink
    metrics: GatewayMetrics
    interval_seconds: float
    send_timeout_seconds: float
    backoff_seconds: float
    backoff_cap_seconds: float
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="eco2-gateway-outbox-sweeper")

    async def aclose(self) -> None:
        """Stop after the sweep in progress (its sends are bounded by the sink timeout)."""
        if self._task is not None:
            self._stopping.set()
            await self._task
            self._task = None

    def backoff(self, attempts: int) -> float:
        """Seconds until the next try after `attempts` failed ones: drawn from 0 to a ceiling doubling from the base,
        capped (full jitter), so the gateways' retries after a broker outage do not come back in step."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_seconds * 2 ** min(max(0, attempts - 1), 30))
        return full_jitter(float(ceiling))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self.sweep_once()
            except StoreUnavailable:
                log.warning("outbox sweep skipped: Redis is unreachable")
                claimed = 0
            except Exception:
                log.exception("outbox sweep crashed")
                claimed = 0
            if claimed < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)

    async def sweep_once(self) -> int:
        """Send every due entry once; returns how many were claimed."""
        claimed = await self.outbox.claim(BATCH)
        if claimed:
            await asyncio.gather(*(self._resend(pending) for pending in claimed))
        self.metrics.outbox_depth.set(await self.outbox.depth())
        return len(claimed)

    async def _resend(self, pending: Pending) -> None:
        outcome = await self.sink.send(pending.headers, pending.body, timeout_seconds=self.send_timeout_seconds)
        self.metrics.sink_sends.labels("outbox", outcome.value).inc()
        fields = {"job_id": pending.job_id, "outcome": outcome.value, "attempts": pending.attempts}
        if outcome is SendOutcome.OK:
            await self.outbox.remove(pending.job_id)
            log.info("outbox entry delivered", extra={"fields": fields})
        else:
            await self.outbox.retry_later(pending.job_id, self.backoff(pending.attempts))
            log.warning("outbox entry not delivered yet", extra={"fields": fields})
