"""The function adapter through functions-framework's ASGI app: encodings, status codes, error bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.jobs import JobStore
from eco2.metrics_port import MetricsPortError, metrics_port, serve_metrics
from eco2.serving import load_function
from tests.support import REDIS_TEST_URL, free_port

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app, function = load_function("echo", FIXTURES)
    env = {"ECO2_STAGE_TIMEOUT_SECONDS": "1", "ECO2_STORE_GRACE_SECONDS": "0", "ECO2_MAX_EVENT_BYTES": "2048"}
    await function.start(env)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
        yield http
    await function.stop()


def echo_event(mode: str, **extra: Any) -> CloudEvent:
    return CloudEvent({"type": "test.echo", "source": "/test", "subject": "job-1", "id": "e1", **extra}, {"mode": mode})


@pytest.mark.parametrize("encode", [to_binary, to_structured], ids=["binary", "structured"])
async def test_reply_comes_back_in_binary_mode(client: httpx.AsyncClient, encode: Any) -> None:
    headers, body = encode(echo_event("reply", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"))
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 200
    assert response.headers["ce-type"] == "test.echoed"
    assert response.headers["ce-id"] == "re-e1"
    assert response.json() == {"echo": {"mode": "reply"}}


async def test_no_reply_is_202_without_body(client: httpx.AsyncClient) -> None:
    headers, body = to_binary(echo_event("none"))
    response = await client.post("/", headers=headers, content=body)
    assert (response.status_code, response.content) == (202, b"")


@pytest.mark.parametrize(
    ("headers", "body", "needle"),
    [
        ({"content-type": "application/json"}, b'{"hello": "world"}', "not a valid CloudEvent"),
        ({"content-type": "text/plain"}, b"garbage", "not a valid CloudEvent"),
        ({"content-type": "application/cloudevents+json"}, b"{not json", "not a valid CloudEvent"),
        (
            {
                "ce-specversion": "1.0",
                "ce-type": "test.echo",
                "ce-source": "/t",
                "content-type": "application/json",
            },
            b"{}",
            "id",
        ),
    ],
    ids=["plain-json", "text", "broken-structured", "missing-id"],
)
async def test_malformed_request_is_400_with_a_clear_body(
    client: httpx.AsyncClient, headers: dict[str, str], body: bytes, needle: str
) -> None:
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"] == "invalid_cloudevent"
    assert needle in payload["message"]


async def test_wrong_type_is_poison(client: httpx.AsyncClient) -> None:
    headers, body = to_binary(CloudEvent({"type": "other.type", "source": "/t", "id": "1"}, {"mode": "reply"}))
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 422
    assert response.json()["error"] == "unexpected_type"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("poison", 422, "invalid_data"), ("transient", 503, "unavailable"), ("ratelimit", 429, "rate_limited")],
)
async def test_errors_map_to_status_codes(client: httpx.AsyncClient, mode: str, status: int, code: str) -> None:
    headers, body = to_binary(echo_event(mode))
    response = await client.post("/", headers=headers, content=body)
    assert (response.status_code, response.json()["error"]) == (status, code)
    if mode == "ratelimit":
        assert response.headers["retry-after"] == "3"


async def test_crash_is_500_without_exception_text(client: httpx.AsyncClient) -> None:
    headers, body = to_binary(echo_event("crash"))
    response = await client.post("/", headers=headers, content=body)
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal error"}
    assert "secret" not in response.text


async def test_stage_time_limit_is_a_transient_error(client: httpx.AsyncClient) -> None:
    headers, body = to_binary(echo_event("slow"))
    response = await client.post("/", headers=headers, content=body)
    assert (response.status_code, response.json()["error"]) == (503, "timeout")


async def test_oversized_body_is_refused(client: httpx.AsyncClient) -> None:
    headers, body = to_binary(CloudEvent({"type": "test.echo", "source": "/t", "id": "1"}, {"pad": "x" * 5000}))
    response = await client.post("/", headers=headers, content=body)
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


async def test_health_and_unknown_routes_and_no_metrics_on_the_public_port(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.json() == {"status": "ok", "function": "echo", "started": True}
    metrics = await client.get("/metrics")
    assert (metrics.status_code, metrics.json()["error"]) == (404, "not_found")
    assert (await client.get("/nope")).status_code == 404
    assert (await client.get("/")).status_code == 405


async def test_the_metrics_port_serves_what_the_function_counted() -> None:
    app, function = load_function("echo", FIXTURES)
    await function.start({})
    port = free_port()
    server = serve_metrics(function.metrics_registry, host="127.0.0.1", port=port)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
            headers, body = to_binary(echo_event("reply"))
            await http.post("/", headers=headers, content=body)
        async with httpx.AsyncClient() as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert 'eco2_events_total{function="echo",outcome="replied",type="test.echo"} 1.0' in scraped.text
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await function.stop()


def test_the_metrics_port_is_off_unless_set_and_never_the_public_port() -> None:
    assert metrics_port({}, 8080) == 0
    assert metrics_port({"ECO2_METRICS_PORT": "9464"}, 8080) == 9464
    with pytest.raises(MetricsPortError):
        metrics_port({"ECO2_METRICS_PORT": "8080"}, 8080)


def test_structured_reply_round_trips_json() -> None:
    _headers, body = to_structured(echo_event("reply"))
    assert json.loads(body)["data"] == {"mode": "reply"}


@pytest.mark.parametrize(
    ("headers", "body", "needle"),
    [
        ({"content-type": "application/cloudevents-batch+json"}, b"[]", "batched"),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({"specversion": "1.0", "id": "1", "source": "/t", "type": "test.echo", "data_base64": "!!"}),
            "data_base64",
        ),
        (
            {"content-type": "application/cloudevents+json"},
            json.dumps({"specversion": "1.0", "id": "1", "source": "/t", "type": "test.echo", "MyExt": "x"}),
            "'MyExt'",
        ),
        (
            {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/t", "ce-type": "test.echo", "ce-my_ext": "x"},
            b"{}",
            "'my_ext'",
        ),
        ({"ce-specversion": "1.0", "ce-source": "/t", "ce-type": "test.echo"}, b"{}", "missing required attribute: id"),
        ({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "test.echo"}, b"{}", "attribute: source"),
        ({"ce-specversion": "0.3", "ce-id": "1", "ce-source": "/t", "ce-type": "test.echo"}, b"{}", "specversion"),
    ],
    ids=["batch", "bad-base64", "structured-uppercase", "underscore", "no-id", "no-source", "old-spec"],
)
async def test_what_the_spec_refuses_is_a_400_naming_the_problem(
    client: httpx.AsyncClient, headers: dict[str, str], body: str | bytes, needle: str
) -> None:
    response = await client.post("/", headers={"content-type": "application/json", **headers}, content=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_cloudevent"
    assert needle in response.json()["message"]


async def test_readiness_follows_redis_and_liveness_does_not() -> None:
    app, function = load_function("vision")
    await function.start({"REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (503, "not_ready")
    finally:
        await function.stop()
    app, function = load_function("vision")
    await function.start({"REDIS_URL": REDIS_TEST_URL})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
            assert (await http.get("/readyz")).json() == {"status": "ready", "function": "vision"}
    finally:
        await function.stop()


async def test_a_delivery_waiting_on_a_busy_stage_answers_stage_busy_before_the_outer_timeout(
    redis_client: aioredis.Redis,
) -> None:
    """The lease wait ends inside the stage's budget, so `stage_busy` (not a generic timeout) is answered."""
    await JobStore(redis_client, ttl_seconds=60).create("busy", "u")
    await redis_client.set(keys.stage_lease("busy", "vision"), "another-delivery", px=60_000)
    app, function = load_function("vision")
    await function.start(
        {"REDIS_URL": REDIS_TEST_URL, "ECO2_STAGE_TIMEOUT_SECONDS": "1", "ECO2_STORE_GRACE_SECONDS": "1"}
    )
    event = CloudEvent(
        {"type": "eco2.scan.requested", "source": "/t", "id": "1", "subject": "busy"},
        {"job_id": "busy", "user_id": "u", "image_url": "http://127.0.0.1:9/x.png"},
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
            headers, body = to_binary(event)
            response = await http.post("/", headers=headers, content=body)
        assert (response.status_code, response.json()["error"]) == (503, "stage_busy")
    finally:
        await function.stop()


@pytest.mark.parametrize(
    ("mode", "body"),
    [("reply", None), ("none", None), ("poison", None), ("crash", None), ("reply", b"x" * 4096), ("reply", b"{")],
)
async def test_post_root_past_the_framework_answers_as_the_framework_does(mode: str, body: bytes | None) -> None:
    """Lifespan hands POST / straight to the function (EventFunction.asgi_post); functions-framework's own app,
    as plain `functions-framework --asgi` serves it, must answer every request the same."""
    wrapped, function = load_function("echo", FIXTURES)
    await function.start(
        {"ECO2_STAGE_TIMEOUT_SECONDS": "1", "ECO2_STORE_GRACE_SECONDS": "0", "ECO2_MAX_EVENT_BYTES": "2048"}
    )
    headers, encoded = to_binary(echo_event(mode))
    answers = []
    try:
        for app in (wrapped, wrapped._app):  # type: ignore[attr-defined]
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fn") as http:
                response = await http.post("/", headers=headers, content=encoded if body is None else body)
            answers.append((response.status_code, response.content, response.headers.get("ce-type")))
    finally:
        await function.stop()
    assert answers[0] == answers[1]


async def test_post_root_skips_the_framework_and_other_requests_do_not() -> None:
    wrapped, function = load_function("echo", FIXTURES)
    framework_saw: list[str] = []
    framework = wrapped._app  # type: ignore[attr-defined]

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        framework_saw.append(f"{scope['method']} {scope['path']}")
        await framework(scope, receive, send)

    wrapped._app = spy  # type: ignore[attr-defined]
    await function.start({})
    headers, body = to_binary(echo_event("reply"))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://fn") as http:
            assert (await http.post("/", headers=headers, content=body)).status_code == 200
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.post("/other", headers=headers, content=body)).status_code == 404
    finally:
        await function.stop()
    assert framework_saw == ["GET /healthz", "POST /other"]
