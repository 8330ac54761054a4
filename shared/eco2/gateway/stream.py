"""One job's SSE stream: replay what already happened, then live events from the hub, ending after the terminal one."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

from sse_starlette.event import ServerSentEvent
from starlette.requests import Request

from eco2.gateway.hub import StreamHub
from eco2.gateway.metrics import GatewayMetrics
from eco2.jobs import DELTA_STATUS, TERMINAL_STATUSES, JobStore, StreamEvent

log = logging.getLogger("eco2.gateway.stream")
_PAGE = 100


def resume_after(request: Request) -> int:
    """The seq a reconnecting client already has: Last-Event-ID, or ?last_event_id= for clients that cannot set it."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or ""
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 16 else 0


def encode(event: StreamEvent) -> ServerSentEvent:
    payload = {
        "seq": event.seq,
        "stage": event.stage,
        "status": event.status,
        "progress": event.progress,
        "message": event.message,
        "data": event.data,
    }
    # A piece of streamed text is its own SSE event type (`delta`), so a client listening for stages is not
    # woken for every token; its stage is in the payload.
    name = DELTA_STATUS if event.status == DELTA_STATUS else event.stage
    return ServerSentEvent(
        json.dumps(payload, ensure_ascii=False, separators=(",", ":")), event=name, id=str(event.seq)
    )


def _terminal(event: StreamEvent) -> bool:
    return event.status in TERMINAL_STATUSES


async def _replay(store: JobStore, job_id: str, after: int) -> AsyncIterator[StreamEvent]:
    while True:
        page = await store.events(job_id, after_seq=after, count=_PAGE)
        for event in page:
            after = event.seq
            yield event
        if len(page) < _PAGE:
            return


async def job_stream(
    store: JobStore,
    hub: StreamHub,
    metrics: GatewayMetrics,
    job_id: str,
    *,
    after: int,
    max_seconds: float,
) -> AsyncIterator[ServerSentEvent]:
    # Subscribe before replaying: whatever lands in between comes through the queue (duplicates skipped by seq).
    subscription = await hub.subscribe(job_id, after)
    metrics.sse_clients.inc()
    last = after
    try:
        async for event in _replay(store, job_id, last):
            last = event.seq
            yield encode(event)
            if _terminal(event):
                return
        if await store.status(job_id) in TERMINAL_STATUSES:
            # It ended between the replay and now (or the client already has the end): send what is left.
            async for event in _replay(store, job_id, last):
                yield encode(event)
            return
        deadline = asyncio.get_running_loop().time() + max_seconds
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    live = await subscription.next()
            except TimeoutError:
                return  # a long-lived stream ends; the client resumes with Last-Event-ID
            if live is None:
                return  # dropped as too slow, or the gateway is stopping
            if live.seq <= last:
                continue
            last = live.seq
            yield encode(live)
            if _terminal(live):
                return
    finally:
        hub.unsubscribe(subscription)
        metrics.sse_clients.dec()
