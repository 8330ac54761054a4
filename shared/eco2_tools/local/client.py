"""The runner's one HTTP client: every Trigger delivery and dead letter, the replicas' readiness probes, the
RabbitmqSources' and PingSources' posts and the S3 emulator's start-up check, on one aiohttp session.

aiohttp, not httpx: the profile of the runner under load spent two thirds of its CPU in httpx/httpcore, most of
it in the connection pool's per-request scan of every pooled connection (a readability poll each); and with
aiohttp alone the runner at rest does not carry httpx (with the rich, click and pygments its CLI pulls in).
"""

from __future__ import annotations

import aiohttp

IDLE_CONNECTION_SECONDS = 4.0  # below uvicorn's keep-alive timeout (5 s), which every function is served with
# Connections for the probes, the sources' and schedules' posts and the dead letters, beyond the deliveries.
SPARE_CONNECTIONS = 200


def runner_session(deliveries: int = 800) -> aiohttp.ClientSession:
    """The runner's HTTP client; create it inside the running loop.

    No cookie jar: one client serves every function, so a cookie one of them sets must not ride along. Idle
    connections are dropped after 4 s, before uvicorn closes its side (5 s), so a request never lands on a
    connection the function is closing. Bodies are passed on as they came (no decompression). Each request
    says its own timeout. Open connections are capped at `deliveries` (the most the Triggers' dispatchers hold in
    flight at once: 2,336 for the pack's manifests, the model stages' shards 2,000 of them; the default suits the
    tests and benchmarks that drive a few Triggers) plus some spare: a delivery never waits on the pool, and the
    open connections stay bounded all the same.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=deliveries + SPARE_CONNECTIONS, limit_per_host=0, keepalive_timeout=IDLE_CONNECTION_SECONDS
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


async def request_status(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    timeout: aiohttp.ClientTimeout,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
) -> int:
    """The HTTP status of one request whose answer is not used: its body read to the end, so the connection goes
    back to the pool, and a redirect taken as the answer, not followed (aiohttp's default would follow it; the
    runner's probes and posts, as httpx before, do not). aiohttp.ClientError or TimeoutError when none came."""
    async with http.request(
        method, url, headers=headers, data=data, timeout=timeout, allow_redirects=False
    ) as response:
        await response.read()
        return response.status


def phase_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """httpx's Timeout(seconds) in aiohttp's terms: getting a connection (a pool slot and the connect) within
    `seconds` and each read within `seconds`, with no deadline on the whole exchange: a slow answer that keeps
    sending is not cut off. (A Trigger's delivery timeout is a deadline on the whole delivery instead.)"""
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_read=seconds)
