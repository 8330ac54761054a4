"""Sends eco2.scan.requested to the broker's ingress (K_SINK) as a binary-mode CloudEvent.

A send has an outcome, never an exception: `ok` (a 2xx: the broker has it), or one that leaves the event in
the outbox — `timeout` (the ingress may or may not have published it), `unreachable`, `rejected` (non-2xx).
"""

from __future__ import annotations

import aiohttp
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2.events import EventType, Priority, ScanRequested, new_event, source_of
from eco2.sender_auth import SenderCredential
from eco2.sink import SendOutcome

# Below the ingress's idle timeout (uvicorn closes idle connections after 5 s), so the gateway drops an idle
# connection before the ingress does; a send that still meets a closed one is retried once on a fresh one.
KEEPALIVE_SECONDS = 4.0


def scan_requested(data: ScanRequested, *, priority: Priority, traceparent: str) -> CloudEvent:
    event = new_event(EventType.SCAN_REQUESTED, data, source=source_of("gateway"), job_id=data.job_id)
    event["priority"] = priority.value
    event["traceparent"] = traceparent
    return event


def binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    headers, body = to_binary(event)
    return dict(headers), body if isinstance(body, bytes) else str(body).encode()


class EventSink:
    """One keep-alive connection pool to the broker ingress per gateway process.

    aiohttp rather than httpx here: the send is on every submit's path, and httpx's per-request overhead
    was half of the gateway's CPU per scan in the gateway benchmark. Redirects are never followed.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        max_connections: int = 100,
        credential: SenderCredential | None = None,
    ) -> None:
        self.url = url
        self._credential = credential or SenderCredential()
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        # Created inside the running loop (the gateway's start), as aiohttp requires.
        self._session = _session(aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=KEEPALIVE_SECONDS))
        # The one retry after a connection the ingress had already closed goes out on a new connection.
        self._fresh = _session(aiohttp.TCPConnector(limit=max_connections, force_close=True))

    async def aclose(self) -> None:
        await self._session.close()
        await self._fresh.close()

    async def send(self, headers: dict[str, str], body: bytes, *, timeout_seconds: float | None = None) -> SendOutcome:
        """One send (and its retry on a new connection); `timeout_seconds` overrides the sink's for each try."""
        timeout = self._timeout if timeout_seconds is None else aiohttp.ClientTimeout(total=timeout_seconds)
        try:
            return await self._post(self._session, headers, body, timeout)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):
                return SendOutcome.UNREACHABLE
        # A kept-alive connection the ingress closed (or reset) under the request: once more, on a new one.
        try:
            return await self._post(self._fresh, headers, body, timeout)
        except (aiohttp.ClientError, OSError):
            return SendOutcome.UNREACHABLE

    async def _post(
        self, session: aiohttp.ClientSession, headers: dict[str, str], body: bytes, timeout: aiohttp.ClientTimeout
    ) -> SendOutcome:
        """The outcome of one POST; a closed or reset connection is raised to the caller, which may retry."""
        try:
            async with session.post(
                self.url,
                data=body,
                headers=headers | self._credential.headers(),
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                await response.read()  # drain it, so the connection goes back to the pool
        except TimeoutError:
            return SendOutcome.TIMEOUT
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            raise
        except (aiohttp.ClientError, OSError):
            return SendOutcome.UNREACHABLE
        return SendOutcome.OK if 200 <= status < 300 else SendOutcome.REJECTED


def _session(connector: aiohttp.TCPConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)
    )
