"""The function adapter through functions-framework's ASGI app: encodings, status codes, error bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from eco2.serving import load_function

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app, function = load_function("echo", FIXTURES)
    await function.start({"ECO2_STAGE_TIMEOUT_SECONDS": "1", "ECO2_MAX_EVENT_BYTES": "2048"})
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


async def test_health_metrics_and_unknown_routes(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.json() == {"status": "ok", "function": "echo", "started": True}
    headers, body = to_binary(echo_event("reply"))
    await client.post("/", headers=headers, content=body)
    metrics = (await client.get("/metrics")).text
    assert 'eco2_events_total{function="echo",outcome="replied",type="test.echo"} 1.0' in metrics
    assert (await client.get("/nope")).status_code == 404
    assert (await client.get("/")).status_code == 405


def test_structured_reply_round_trips_json() -> None:
    _headers, body = to_structured(echo_event("reply"))
    assert json.loads(body)["data"] == {"mode": "reply"}
