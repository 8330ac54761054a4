"""POST /api/v1/scan: the 202 contract, the CloudEvent at K_SINK, failures that leave it pending, idempotency."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from eco2 import keys
from eco2.events import EventType, shard_of
from eco2.gateway.idempotency import job_id_for
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer


async def jobs_of(redis: aioredis.Redis, user: str) -> list[str]:
    """Ids of the jobs in Redis that belong to `user`."""
    found: list[str] = []
    for raw in await redis.keys(keys.job("*")):
        key = str(raw)
        if key.count(":") == 2 and await redis.hget(key, "user_id") == user:
            found.append(key.rsplit(":", 1)[1])
    return found


TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


async def test_submit_answers_202_and_sends_a_binary_scan_requested(gateway: Gateway, sink: RecordingSink) -> None:
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE, "user_input": "생수병이에요"}, headers=bearer("user-1")
    )
    assert response.status_code == 202, response.text
    body = response.json()
    job_id = body["job_id"]
    urls = {"stream_url": f"/api/v1/scan/{job_id}/events", "result_url": f"/api/v1/scan/{job_id}/result"}
    assert body == {"job_id": job_id, **urls, "status": "queued"}
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    [received] = sink.events()
    assert received.headers["ce-type"] == EventType.SCAN_REQUESTED
    assert received.headers["ce-specversion"] == "1.0"
    assert received.headers["ce-source"] == "/eco2/gateway"
    assert received.headers["ce-subject"] == job_id
    assert received.headers["ce-priority"] == "normal"
    assert received.headers["ce-shard"] == shard_of(job_id)  # the model stages' Triggers route on it
    assert TRACEPARENT.match(received.headers["ce-traceparent"])
    assert received.headers["content-type"].startswith("application/json")
    assert json.loads(received.body) == {
        "job_id": job_id,
        "user_id": "user-1",
        "image_url": PUBLIC_IMAGE,
        "user_input": "생수병이에요",
        "model": None,
    }
    job = await gateway.store.get(job_id)
    assert job is not None
    assert (job["status"], job["stage"], job["user_id"], job["priority"]) == ("queued", "queued", "user-1", "normal")
    assert json.loads(job["request"])["image_url"] == PUBLIC_IMAGE
    assert [e.stage for e in await gateway.store.events(job_id)] == ["queued"]


@pytest.mark.parametrize("claim", ["vip", "high"])
async def test_a_vip_token_sends_high_priority(gateway: Gateway, sink: RecordingSink, claim: str) -> None:
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer("vip-user", priority=claim)
    )
    assert response.status_code == 202
    [received] = sink.events()
    assert received.event["priority"] == "high"
    job = await gateway.store.get(response.json()["job_id"])
    assert job is not None
    assert job["priority"] == "high"


async def test_two_submits_get_fresh_trace_contexts_and_job_ids(gateway: Gateway, sink: RecordingSink) -> None:
    for _ in range(2):
        assert (
            await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer())
        ).status_code == 202
    first, second = sink.events()
    assert first.event["subject"] != second.event["subject"]
    assert first.event["traceparent"] != second.event["traceparent"]


@pytest.mark.parametrize("mode", ["fail", "slow", "unreachable"])
async def test_a_sink_failure_leaves_the_scan_accepted_and_its_send_pending(
    make_gateway: MakeGateway, sink: RecordingSink, mode: str
) -> None:
    overrides = {"K_SINK": "http://127.0.0.1:9/"} if mode == "unreachable" else {}
    gateway = await make_gateway(**overrides)
    sink.mode = mode
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers={**bearer(), "X-Idempotency-Key": mode}
    )
    assert response.status_code == 202, response.text
    job_id = job_id_for("user-1", mode)
    job = await gateway.store.get(job_id)
    assert job is not None
    assert job["status"] == "queued"
    assert [(e.stage, e.status) for e in await gateway.store.events(job_id)] == [("queued", "queued")]
    outbox = gateway.context.outbox
    assert outbox is not None
    assert await outbox.depth() == 1


async def test_without_k_sink_submits_answer_503(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(K_SINK="")
    response = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer())
    assert response.status_code == 503


async def test_an_idempotent_repeat_returns_the_same_job_and_body(gateway: Gateway, sink: RecordingSink) -> None:
    headers = {**bearer(), "X-Idempotency-Key": "photo-1"}
    first = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)
    second = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer() | {"X-Idempotency-Key": "photo-1"}
    )
    assert first.status_code == second.status_code == 202
    assert first.content == second.content
    assert second.headers["idempotent-replayed"] == "true"
    assert len(sink.events()) == 1
    other_user = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers={**bearer("user-2"), "X-Idempotency-Key": "photo-1"}
    )
    assert other_user.json()["job_id"] != first.json()["job_id"], "keys are scoped to the user"


async def test_twenty_concurrent_repeats_create_one_job_and_one_event(
    gateway: Gateway, sink: RecordingSink, redis_client: aioredis.Redis
) -> None:
    headers = {**bearer(), "X-Idempotency-Key": "tap-tap-tap"}
    responses = await asyncio.gather(
        *(gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.content for r in responses}) == 1
    assert len(sink.events(EventType.SCAN_REQUESTED)) == 1
    assert await jobs_of(redis_client, "user-1") == [responses[0].json()["job_id"]]
    job_id = responses[0].json()["job_id"]
    assert [e.stage for e in await gateway.store.events(job_id)] == ["queued"]


async def test_reusing_a_key_for_another_request_is_refused(gateway: Gateway) -> None:
    headers = {**bearer(), "X-Idempotency-Key": "k1"}
    assert (
        await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)
    ).status_code == 202
    other = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE, "user_input": "different"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "ünïcode"])
async def test_a_bad_idempotency_key_is_400(gateway: Gateway, key: str) -> None:
    response = await gateway.client.post(
        "/api/v1/scan",
        json={"image_url": PUBLIC_IMAGE},
        headers=[(name.encode(), value.encode()) for name, value in {**bearer(), "X-Idempotency-Key": key}.items()],
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_idempotency_key"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'"just a string"', 400, "invalid_json"),
        (b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
        (b"{}", 422, "invalid_request"),
        (b'{"image_url": 42}', 422, "invalid_request"),
        (b'{"image_url": "http://93.184.216.34/a.png", "user_input": ["x"]}', 422, "invalid_request"),
        (b'{"image_url": "http://93.184.216.34/a.png", "user_input": "' + b"a" * 1001 + b'"}', 422, "invalid_request"),
        (b'{"image_url": "http://93.184.216.34/a.png", "user_input": "\\ud800"}', 422, "invalid_request"),
        (b'{"image_url": "http://93.184.216.34/a.png", "model": "gpt-99"}', 400, "unknown_model"),
    ],
)
async def test_bad_bodies_get_a_clear_4xx(gateway: Gateway, body: bytes, status: int, code: str) -> None:
    response = await gateway.client.post(
        "/api/v1/scan", content=body, headers={**bearer(), "content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert set(response.json()) == {"error", "message"}


async def test_unknown_model_lists_the_supported_ones(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE, "model": "gpt-99"}, headers=bearer()
    )
    assert "gpt-4.1-mini" in response.json()["message"]


async def test_a_supported_model_is_passed_on(gateway: Gateway, sink: RecordingSink) -> None:
    response = await gateway.client.post(
        "/api/v1/scan", json={"image_url": PUBLIC_IMAGE, "model": "gpt-4.1"}, headers=bearer()
    )
    assert response.status_code == 202
    data = sink.events()[0].event.get_data()
    assert isinstance(data, dict)
    assert data["model"] == "gpt-4.1"


async def test_a_body_over_16_kib_is_413(gateway: Gateway) -> None:
    body = json.dumps({"image_url": PUBLIC_IMAGE, "padding": "x" * 17000}).encode()
    response = await gateway.client.post("/api/v1/scan", content=body, headers=bearer())
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 1024

    streamed = await gateway.client.post("/api/v1/scan", content=chunked(), headers=bearer())
    assert streamed.status_code == 413


async def test_the_rate_limit_answers_429_with_retry_after(make_gateway: MakeGateway, sink: RecordingSink) -> None:
    gateway = await make_gateway(ECO2_RATE_LIMIT_BURST="3", ECO2_RATE_LIMIT_PER_SECOND="0.1")
    statuses = []
    for _ in range(4):
        response = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer())
        statuses.append(response.status_code)
    assert statuses == [202, 202, 202, 429]
    assert response.json()["error"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 10
    other = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer("user-2"))
    assert other.status_code == 202, "the bucket is per user"
    assert len(sink.events()) == 4


async def test_keyed_repeats_pay_once_and_a_refused_key_pays_again(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(ECO2_RATE_LIMIT_BURST="1", ECO2_RATE_LIMIT_PER_SECOND="0.01")

    async def submit(key: str) -> httpx.Response:
        headers = {**bearer(), "X-Idempotency-Key": key}
        return await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)

    assert (await submit("photo-1")).status_code == 202
    replayed = await submit("photo-1")
    assert (replayed.status_code, replayed.headers.get("idempotent-replayed")) == (202, "true")
    refused = [(await submit("photo-2")).status_code for _ in range(2)]
    assert refused == [429, 429], "a refused submit's repeat must pay again, not ride on a charge never paid"
