"""Sends eco2.scan.requested to the broker's ingress (K_SINK) as a binary-mode CloudEvent."""

from __future__ import annotations

import secrets

import httpx
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
    def __init__(self, url: str | None, client: httpx.AsyncClient, *, timeout_seconds: float) -> None:
        self._url = url
        self._client = client
        self._timeout = timeout_seconds

    async def send(self, event: CloudEvent) -> None:
        if self._url is None:
            raise SinkUnavailable("K_SINK is not set, so there is no broker to send to")
        headers, body = to_binary(event)
        try:
            response = await self._client.post(self._url, headers=dict(headers), content=body, timeout=self._timeout)
        except httpx.TimeoutException:
            raise SinkUnavailable(f"the broker did not answer within {self._timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"the broker is unreachable ({type(exc).__name__})") from None
        if not response.is_success:
            raise SinkUnavailable(f"the broker answered {response.status_code}")
