"""The local runner's PingSources: each manifest's cron schedule posts its CloudEvent to its sink Service.

As Knative's PingSource adapter does: at every minute the schedule names, one event (type
dev.knative.sources.ping, the spec's data) goes to the sink. A sink that is down or answers non-2xx is logged
and asked again at the next tick (Knative's PingSource does not retry either; the replay it feeds picks up
whatever is due). `ECO2_PING_EVERY_SECONDS` (tests, fault runs) replaces every schedule by a fixed period.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2_tools.local.client import phase_timeout, request_status
from eco2_tools.local.dispatcher import Endpoint
from eco2_tools.manifests import Manifests
from eco2_tools.manifests.pingsource import PingSourceSpec, ping_sources

log = logging.getLogger("eco2_tools.local.schedules")
SEND_TIMEOUT = phase_timeout(120.0)

EndpointSource = Callable[[str], Awaitable[Endpoint]]


def start_schedules(
    manifests: Manifests, endpoints: EndpointSource, http: aiohttp.ClientSession, *, every_seconds: float | None = None
) -> list[asyncio.Task[None]]:
    """One task per PingSource of the manifests; cancel them to stop."""
    return [
        asyncio.create_task(run_schedule(source, endpoints, http, every_seconds), name=f"eco2-ping-{source.name}")
        for source in ping_sources(manifests).values()
    ]


async def run_schedule(
    source: PingSourceSpec, endpoints: EndpointSource, http: aiohttp.ClientSession, every_seconds: float | None
) -> None:
    while True:
        await asyncio.sleep(_until_next(source, every_seconds))
        await ping(source, endpoints, http)


def _until_next(source: PingSourceSpec, every_seconds: float | None) -> float:
    if every_seconds is not None:
        return every_seconds
    now = datetime.now(UTC)
    return max(0.0, (source.cron.next_after(now) - now).total_seconds())


async def ping(source: PingSourceSpec, endpoints: EndpointSource, http: aiohttp.ClientSession) -> int:
    """Send one tick's event to the sink; its HTTP status (0: no answer). Never raises for a failed send."""
    event = CloudEvent(source.event_attributes(str(uuid.uuid4())), source.event_data())
    headers, body = to_binary(event)
    fields: dict[str, object] = {"pingsource": source.name, "sink": source.sink_service}
    try:
        endpoint = await endpoints(source.sink_service)
    except Exception as exc:  # a sink that cannot start: this tick is missed, the next one comes
        log.warning("ping not sent: sink unavailable", extra={"fields": {**fields, "error": type(exc).__name__}})
        return 0
    try:
        status = await request_status(
            http, "POST", endpoint.url, headers=dict(headers), data=body, timeout=SEND_TIMEOUT
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("ping not delivered", extra={"fields": {**fields, "error": type(exc).__name__}})
        return 0
    finally:
        endpoint.release()
    if not 200 <= status < 300:
        log.warning("ping refused", extra={"fields": {**fields, "status": status}})
    return status
