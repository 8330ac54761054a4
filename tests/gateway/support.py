"""Gateway test helpers: a recording K_SINK server, tokens, SSE reading, metrics and Redis client counting."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import redis.asyncio as aioredis
from cloudevents.http import CloudEvent, from_http

from eco2.gateway.auth import issue_token
from eco2.jobs import JobStatus, JobStore, Stage
from eco2_tools.sse_client import SseMessage, amessages
from tests.support import Child

SECRET = "gateway-tests-secret-0123456789abcdef0123456789"
PUBLIC_IMAGE = "http://93.184.216.34/bottle.png"  # a public address literal: checked, never fetched
TERMINAL = frozenset({"done", "failed", "cancelled"})
# The session's `eco2 serve gateway` names its Redis connections with this (tests count them in CLIENT LIST).
LIVE_INSTANCE = f"tests-{uuid.uuid4().hex[:12]}"


def token(user: str = "user-1", *, ttl: float = 600, priority: str | None = None, **kwargs: Any) -> str:
    return issue_token(user, kwargs.pop("secret", SECRET), ttl, priority, **kwargs)


def bearer(user: str = "user-1", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, **kwargs)}"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    event: CloudEvent


@dataclass
class RecordingSink:
    """A real HTTP server standing in for the broker ingress: records each CloudEvent, or misbehaves on demand.

    Modes: ok; fail (500, not recorded); slow (answers only after the gateway gave up, not recorded); late
    (recorded, as the ingress publishes it, but answered only after the gateway gave up). `idle_close` makes
    it an HTTP/1.1 keep-alive server that closes a connection idle longer than that many seconds when the next
    request arrives on it, unanswered: a request that raced the ingress closing an idle connection.
    `on_receive` runs (in the server's thread) after an event is recorded, before the answer.
    """

    mode: str = "ok"
    idle_close: float | None = None
    late_seconds: float = 1.0
    on_receive: Callable[[], None] | None = None
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def events(self, event_type: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if event_type is None or r.event["type"] == event_type]

    def ids(self) -> list[str]:
        return [str(r.event["id"]) for r in self.events()]

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
        self.mode = "ok"
        self.on_receive = None

    def record(self, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.received.append(Received(headers, body, from_http(headers, body)))
        if self.on_receive is not None:
            self.on_receive()

    def start(self, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # bursts of new connections must not wait for SYN retries
    daemon_threads = True


def _handler(sink: RecordingSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if sink.idle_close is not None else "HTTP/1.0"
        answered_at: float | None = None

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            idle = None if self.answered_at is None else time.monotonic() - self.answered_at
            if sink.idle_close is not None and idle is not None and idle > sink.idle_close:
                self.close_connection = True  # closed while idle: this request is never answered
                return
            mode = sink.mode  # decided on arrival: a slow answer must not be recorded into a later test
            if mode in ("ok", "late"):
                sink.record({k.lower(): v for k, v in self.headers.items()}, body)
            if mode in ("slow", "late"):
                sink._release.wait(sink.late_seconds)
            self.send_response(500 if mode == "fail" else 202)
            self.send_header("content-length", "0")
            self.end_headers()
            self.answered_at = time.monotonic()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


async def read_stream(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str], timeout: float = 15.0
) -> list[SseMessage]:
    """Every SSE message until the server closes the stream (it must, after the terminal event)."""
    messages: list[SseMessage] = []
    async with asyncio.timeout(timeout), client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for message in amessages(response):
            messages.append(message)
    return messages


async def open_stream(
    client: httpx.AsyncClient, url: str, *, headers: dict[str, str]
) -> tuple[httpx.Response, AsyncIterator[SseMessage]]:
    request = client.build_request("GET", url, headers=headers)
    response = await client.send(request, stream=True)
    assert response.status_code == 200, await response.aread()
    return response, amessages(response)


async def metric(gateway: Child, name: str) -> float:
    """One unlabelled sample from a gateway process's /metrics (on its metrics port)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(gateway.metrics_url)).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def gateway_connections(redis: aioredis.Redis, name: str) -> int:
    """Connections to Redis named `name` (the gateway names its pool and its stream reader)."""
    clients = await redis.client_list()
    return sum(1 for c in clients if c.get("name") == name)


PIPELINE = (Stage.VISION, Stage.RULE, Stage.ANSWER, Stage.REWARD)


async def advance(store: JobStore, job_id: str, stages: tuple[Stage, ...], user: str = "user-1") -> None:
    """Play the stage functions' part: record transitions as they would."""
    for stage in stages:
        await store.transition(job_id, user, stage, JobStatus.RUNNING, message=f"{stage.value} 완료")


DONE_MESSAGE = "완료되었어요"


async def finish(store: JobStore, job_id: str, result: dict[str, Any], user: str = "user-1") -> None:
    """Play the reward function's last part: the job is done with `result`."""
    stored = {"result": json.dumps(result, ensure_ascii=False)}
    await store.transition(
        job_id, user, Stage.DONE, JobStatus.DONE, message=DONE_MESSAGE, data={"result": result}, fields=stored
    )


def done_event(result: dict[str, Any]) -> dict[str, Any]:
    """The data of the SSE message a job finished by `finish` ends its stream with."""
    return {
        "seq": 6,
        "stage": "done",
        "status": "done",
        "progress": 100,
        "message": DONE_MESSAGE,
        "data": {"result": result},
    }
