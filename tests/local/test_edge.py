"""The runner's edge (eco2_tools.local.edge) speaks Envoy's ext_authz HTTP protocol as Istio's ingress does: the
check carries the original method, the prefixed path and the allowed headers; 200 passes authz's identity headers
on (never the client's), any other answer is the client's, and authz failing refuses (fail closed).

An authz of the test's own stands behind the edge here, answering as told, to reach every branch (the real authz
behind the real edge: tests/local/test_pack_edge.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from eco2_tools.local.client import runner_session
from eco2_tools.local.dispatcher import Endpoint
from eco2_tools.local.edge import CHECK_PATH_PREFIX, STATUS_ON_ERROR, UNCHECKED_PATHS, Edge, is_checked
from eco2_tools.local.metrics import RunnerMetrics
from tests.support import free_port


@dataclass
class Authz:
    """What the test's authz answers next, and every check it was asked."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"x-user-id": "u-1", "x-user-role": "user"})
    body: bytes = b""
    delay: float = 0.0
    checks: list[dict[str, Any]] = field(default_factory=list)

    async def check(self, request: Request) -> Response:
        self.checks.append(
            {"method": request.method, "path": request.url.path, "headers": dict(request.headers)}
            | {"body": await request.body()}
        )
        await asyncio.sleep(self.delay)
        return Response(self.body, status_code=self.status, headers=self.headers)


async def echo(request: Request) -> Response:
    """The gateway's part: what reached it."""
    if request.url.path == "/stream":

        async def pieces() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"data: {n}\n\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(pieces(), media_type="text/event-stream")
    body: dict[str, Any] = {"method": request.method, "path": request.url.path, "query": request.url.query}
    body |= {"headers": dict(request.headers), "body": (await request.body()).decode()}
    return JSONResponse(body, headers={"x-from": "gateway"})


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test server could not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Rig:
    authz: Authz
    metrics: RunnerMetrics
    client: httpx.AsyncClient
    urls: dict[str, str]  # where the edge finds each service

    def counted(self, outcome: str) -> float:
        return self.metrics.registry.get_sample_value("eco2_runner_edge_checks_total", {"outcome": outcome}) or 0.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    authz = Authz()
    authz_app = Starlette(routes=[Route("/{path:path}", authz.check, methods=["GET", "POST", "DELETE"])])
    gateway_app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST", "DELETE"])])
    async with served(authz_app) as authz_url, served(gateway_app) as gateway_url:
        urls = {"authz": authz_url, "gateway": gateway_url}

        async def endpoints(service: str) -> Endpoint:
            if service not in urls:
                raise LookupError(service)
            return Endpoint(urls[service], lambda: None)

        session: aiohttp.ClientSession = runner_session()
        metrics = RunnerMetrics()
        transport = httpx.ASGITransport(app=Edge(endpoints, session, metrics), client=("203.0.113.7", 5555))
        async with session, httpx.AsyncClient(transport=transport, base_url="http://gateway.eco2.test") as client:
            yield Rig(authz, metrics, client, urls)


def test_the_unchecked_paths_are_the_open_ones_and_everything_else_is_checked() -> None:
    for path in ("/healthz", "/app", "/app/static/app.js", "/app/dev-token", "/api/v1/scan/categories", "/"):
        assert not is_checked(path), path
    for path in ("/api/v1/scan", "/api/v1/me/characters", "/api/v1/scan/j1/events", "/metrics", "/apps", "/x"):
        assert is_checked(path), path
    assert "/api/v1/characters" in UNCHECKED_PATHS


async def test_an_allowed_request_reaches_the_gateway_with_authzs_identity_and_not_the_clients(rig: Rig) -> None:
    headers = {"authorization": "Bearer t", "x-user-id": "someone-else", "x-user-role": "admin", "cookie": "c=1"}
    answer = await rig.client.post("/api/v1/scan?x=1", content=b'{"a": 1}', headers=headers)
    assert answer.status_code == 200
    assert answer.headers["x-from"] == "gateway"
    seen = answer.json()
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == ("POST", "/api/v1/scan", "x=1", '{"a": 1}')
    assert seen["headers"]["x-user-id"] == "u-1"
    assert seen["headers"]["x-user-role"] == "user"
    assert seen["headers"]["authorization"] == "Bearer t"  # the gateway checks it again (revoke needs its jti)
    assert seen["headers"]["x-forwarded-for"] == "203.0.113.7"
    (check,) = rig.authz.checks
    assert check["method"] == "POST"
    assert check["path"] == f"{CHECK_PATH_PREFIX}/api/v1/scan"
    assert check["body"] == b""  # the body is not part of the check
    assert check["headers"]["authorization"] == "Bearer t"
    assert "x-user-id" not in check["headers"]
    assert "cookie" not in check["headers"]
    assert rig.counted("allowed") == 1


async def test_a_refusal_is_authzs_own_answer_and_never_reaches_the_gateway(rig: Rig) -> None:
    rig.authz.status = 401
    rig.authz.headers = {"content-type": "application/json", "www-authenticate": 'Bearer realm="eco2"'}
    rig.authz.body = json.dumps({"error": "token_revoked", "message": "the token was revoked"}).encode()
    answer = await rig.client.get("/api/v1/me/scans", headers={"authorization": "Bearer t"})
    assert answer.status_code == 401
    assert answer.json()["error"] == "token_revoked"
    assert answer.headers["www-authenticate"] == 'Bearer realm="eco2"'
    assert "x-from" not in answer.headers
    assert rig.counted("denied") == 1


@pytest.mark.parametrize("failure", ["5xx", "timeout", "unreachable"])
async def test_authz_failing_refuses_the_request(rig: Rig, failure: str) -> None:
    if failure == "5xx":
        rig.authz.status = 503
    elif failure == "timeout":
        rig.authz.delay = 2.0  # beyond the check's 1 s
    elif failure == "unreachable":
        rig.urls["authz"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    answer = await rig.client.get("/api/v1/me/scans", headers={"authorization": "Bearer t"})
    assert answer.status_code == STATUS_ON_ERROR
    assert answer.json()["error"] == "authz_unavailable"
    assert rig.counted("error") == 1


async def test_open_paths_skip_authz_and_streams_pass_through(rig: Rig) -> None:
    rig.authz.status = 401
    answer = await rig.client.get("/api/v1/scan/categories", headers={"x-user-id": "forged"})
    assert answer.status_code == 200
    assert "x-user-id" not in answer.json()["headers"]  # an open path gets no identity at all
    assert rig.authz.checks == []
    assert rig.counted("unchecked") == 1
    rig.authz.status = 200
    async with rig.client.stream("GET", "/stream", headers={"authorization": "Bearer t"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        received = b"".join([chunk async for chunk in stream.aiter_bytes()])
    assert received == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_a_body_over_the_limit_is_refused_413(rig: Rig) -> None:
    answer = await rig.client.post("/api/v1/chat", content=b"x" * (1024 * 1024 + 1), headers={"authorization": "B t"})
    assert answer.status_code == 413
