"""Sends eco2.scan.requested to the broker's ingress (K_SINK) as a binary-mode CloudEvent."""

from __future__ import annotations

import secrets

import aiohttp
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2.events import EventType, Priority, ScanRequested, new_event, source_of


class SinkUnavailable(Exception):
    """The broker did not take the event (unset, unreachable, slow, or a non-2xx answer)."""


def new_traceparent() -> str:
    """A fresh W3C trace context: version 00, random trace and span ids, sampled."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def scan_requested(data: ScanRequested, *, priority: Priority, traceparent: str) -> CloudEvent:
    event = new_event(EventType.SCAN_REQUESTED, data, source=source_of("gateway"), job_id=data.job_id)
    event["priority"] = priority.value
    event["traceparent"] = traceparent
    return event


class EventSink:
    """One keep-alive connection pool to the broker ingress per gateway process.

    aiohttp rather than httpx here: the send is on every submit's path, and httpx's per-request overhead
    was half of the gateway's CPU per scan in the gateway benchmark.
    """

    def __init__(self, url: str | None, *, timeout_seconds: float, max_connections: int = 100) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._seconds = timeout_seconds
        # Created inside the running loop (the gateway's start), as aiohttp requires.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )

    async def aclose(self) -> None:
        await self._session.close()

    async def send(self, event: CloudEvent) -> None:
        if self._url is None:
            raise SinkUnavailable("K_SINK is not set, so there is no broker to send to")
        headers, body = to_binary(event)
        try:
            async with self._session.post(
                self._url, data=body, headers=dict(headers), timeout=self._timeout, allow_redirects=False
            ) as response:
                status = response.status
                await response.read()  # drain it, so the connection goes back to the pool
        except TimeoutError:
            raise SinkUnavailable(f"the broker did not answer within {self._seconds:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SinkUnavailable(f"the broker is unreachable ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            raise SinkUnavailable(f"the broker answered {status}")
