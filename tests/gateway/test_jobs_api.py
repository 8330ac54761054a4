"""Result polling, cancel, categories, health, metrics, the OpenAPI document, and error bodies for every miss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from eco2.capacity import WaitAnnouncer
from eco2.gateway import models
from eco2.jobs import JobStatus, Stage
from eco2.rules import RuleBook
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.support import PIPELINE, PUBLIC_IMAGE, advance, bearer, done_event, finish
from tests.support import exposition, free_port

ROOT = Path(__file__).resolve().parents[2]
RESULT = {
    "pipeline_result": {
        "classification": {"major_category": "재활용폐기물", "middle_category": "무색페트병"},
        "disposal_rules": {"middle_category": "무색페트병"},
        "final_answer": {"disposal_steps": ["비워요"], "insufficiencies": [], "user_answer": "잘했어요"},
    },
    "reward": {"character_id": "c1", "name": "페티", "middle_category": "무색페트병"},
    "reward_reason": "granted",
}


async def submitted(gateway: Gateway, user: str = "user-1") -> str:
    response = await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=bearer(user))
    assert response.status_code == 202
    return str(response.json()["job_id"])


async def finish_pipeline(gateway: Gateway, job_id: str, user: str = "user-1") -> None:
    await advance(gateway.store, job_id, PIPELINE, user)
    await finish(gateway.store, job_id, RESULT, user)


async def test_result_is_202_with_retry_after_while_running(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    queued = await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())
    assert queued.status_code == 202
    assert queued.headers["retry-after"] == "2"
    queued_body = {"status": "queued", "message": "접수되었어요", "current_stage": "queued", "progress": 0}
    assert queued.json() == queued_body | {"waiting_for_capacity": None}
    await gateway.store.transition(job_id, "user-1", Stage.VISION, JobStatus.RUNNING, message="분류했어요")
    running = await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())
    running_body = {"status": "running", "message": "분류했어요", "current_stage": "vision", "progress": 25}
    assert running.json() == running_body | {"waiting_for_capacity": None}


async def test_result_says_when_the_scan_waits_for_model_capacity(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    await gateway.store.transition(job_id, "user-1", Stage.VISION, JobStatus.RUNNING, message="분류 중이에요")
    announce = WaitAnnouncer(gateway.store.redis)
    await announce(job_id, "vision", "gpt-4.1-mini")
    waiting = (await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())).json()
    assert (waiting["status"], waiting["current_stage"]) == ("running", "vision")
    assert waiting["waiting_for_capacity"]["model"] == "gpt-4.1-mini"
    await announce.ended(job_id)
    going = (await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())).json()
    assert going["waiting_for_capacity"] is None


async def test_result_is_200_with_the_pipeline_result_when_done(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    await finish_pipeline(gateway, job_id)
    response = await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())
    assert response.status_code == 200
    assert response.json() == {
        "task_id": job_id,
        "status": "done",
        "message": "완료되었어요",
        "pipeline_result": RESULT["pipeline_result"],
        "reward": RESULT["reward"],
        "reward_reason": "granted",
        "error": None,
    }


async def test_result_of_an_unknown_or_someone_elses_job_is_404(gateway: Gateway) -> None:
    job_id = await submitted(gateway, "owner")
    for path, headers in (
        ("/api/v1/scan/0123456789abcdef/result", bearer("owner")),
        (f"/api/v1/scan/{job_id}/result", bearer("intruder")),
        (f"/api/v1/scan/{job_id}/events", bearer("intruder")),
        ("/api/v1/scan/not..valid/result", bearer("owner")),
    ):
        response = await gateway.client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "message": "no such job"}
    delete = await gateway.client.delete(f"/api/v1/scan/{job_id}", headers=bearer("intruder"))
    assert delete.status_code == 404
    assert (await gateway.store.status(job_id)) == JobStatus.QUEUED


async def test_cancel_records_cancelled_at_the_current_stage(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    await gateway.store.transition(job_id, "user-1", Stage.VISION, JobStatus.RUNNING)
    response = await gateway.client.delete(f"/api/v1/scan/{job_id}", headers=bearer())
    assert response.status_code == 200
    assert response.json()["job_id"] == job_id
    assert response.json()["status"] == "cancelled"
    assert response.json()["current_stage"] == "vision"
    events = await gateway.store.events(job_id)
    assert [(e.stage, e.status) for e in events][-1] == ("vision", "cancelled")
    again = await gateway.client.delete(f"/api/v1/scan/{job_id}", headers=bearer())
    assert (again.status_code, again.json()["error"]) == (409, "already_finished")
    result = await gateway.client.get(f"/api/v1/scan/{job_id}/result", headers=bearer())
    assert (result.status_code, result.json()["status"]) == (200, "cancelled")


async def test_a_finished_job_cannot_be_cancelled(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    await finish_pipeline(gateway, job_id)
    response = await gateway.client.delete(f"/api/v1/scan/{job_id}", headers=bearer())
    assert response.status_code == 409


async def test_the_events_of_a_finished_job_replay_and_close(gateway: Gateway) -> None:
    job_id = await submitted(gateway)
    await finish_pipeline(gateway, job_id)
    response = await gateway.client.get(f"/api/v1/scan/{job_id}/events", headers=bearer())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    assert len(blocks) == 6
    assert blocks[0].splitlines()[:2] == ["id: 1", "event: queued"]
    last = blocks[-1].splitlines()
    assert last[:2] == ["id: 6", "event: done"]
    data = json.loads(last[2].removeprefix("data: "))
    assert data == done_event(RESULT)


async def test_categories_are_the_apps_bare_array_from_the_rule_book(gateway: Gateway) -> None:
    """D14: the Eco² app reads a bare array of {id, name, display_name, instructions}."""
    response = await gateway.client.get("/api/v1/scan/categories")
    assert response.status_code == 200
    served = response.json()
    assert isinstance(served, list)
    book = RuleBook.load().categories()
    assert [c["id"] for c in served] == [c["rule_id"] for c in book]
    for category, rule in zip(served, book, strict=True):
        assert category["name"] == (rule["middle_category"] or rule["major_category"])
        assert category["display_name"] == rule["display_name"]
        assert category["instructions"] == rule["steps"]
        assert all(isinstance(step, str) and step for step in category["instructions"])
        models.Category.model_validate(category)  # what openapi.json promises
    pet = next(c for c in served if c["id"] == "recyclable_clear_pet")
    assert pet["name"] == "무색페트병"


async def test_health_and_metrics_and_none_on_the_public_port(gateway: Gateway) -> None:
    health = await gateway.client.get("/healthz")
    assert health.json() == {"status": "ok", "function": "gateway", "redis": True}
    await submitted(gateway)
    public = await gateway.client.get("/metrics")
    assert (public.status_code, public.json()["error"]) == (404, "not_found")
    metrics = exposition(gateway.function)  # what its metrics port serves
    assert 'eco2_gateway_accept_seconds_count{status="202"} 1.0' in metrics
    for name in ("eco2_gateway_sse_clients", "eco2_gateway_redis_reader_connections"):
        assert f"\n{name} " in metrics


async def test_readiness_follows_redis(make_gateway: MakeGateway) -> None:
    ready = await (await make_gateway()).client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "function": "gateway"})
    cut_off = await make_gateway(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    not_ready = await cut_off.client.get("/readyz")
    assert (not_ready.status_code, not_ready.json()["status"]) == (503, "not_ready")


async def test_the_served_openapi_document_is_the_repo_file(gateway: Gateway) -> None:
    from eco2.gateway.openapi import render

    served = (await gateway.client.get("/openapi.json")).json()
    kept = (ROOT / "openapi.json").read_text(encoding="utf-8")
    assert served == json.loads(kept)
    assert kept == render(), "regenerate: python -m eco2.gateway.openapi --write"
    assert set(served["paths"]) >= {
        "/api/v1/scan",
        "/api/v1/scan/{job_id}/result",
        "/api/v1/scan/{job_id}/events",
        "/api/v1/scan/{job_id}",
        "/api/v1/scan/categories",
    }


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/api/v1/scan", 405, "method_not_allowed"),
        ("PUT", "/healthz", 405, "method_not_allowed"),
        ("POST", "/api/v1/scan/categories", 405, "method_not_allowed"),
    ],
)
async def test_misses_answer_json_errors(gateway: Gateway, method: str, path: str, status: int, code: str) -> None:
    response = await gateway.client.request(method, path, headers=bearer())
    assert response.status_code == status
    assert response.json()["error"] == code


async def test_an_unexpected_crash_is_a_bare_500(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    class Exploding(list[Any]):
        def __iter__(self) -> Any:
            raise RuntimeError("secret internals")

    gateway.context.categories = Exploding()
    response = await gateway.client.get("/api/v1/scan/categories")
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal error"}
    assert "secret internals" not in response.text


async def test_functions_frameworks_path_param_does_not_leak_into_the_routes(gateway: Gateway) -> None:
    """functions-framework's catch-all route leaves {"path": ...} in the scope; the gateway routes afresh."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/scan/abc/result",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "path_params": {"path": "api/v1/scan/abc/result"},
    }
    response = await gateway.function.handle(Request(scope))
    assert response.status_code == 401, "routed to the result endpoint, which wants a token"
    assert scope["path_params"] == {"job_id": "abc"}


async def test_the_request_pool_waits_as_long_as_the_setting_says(make_gateway: MakeGateway) -> None:
    default = await make_gateway()
    tuned = await make_gateway(ECO2_REDIS_MAX_CONNECTIONS="3", ECO2_REDIS_POOL_WAIT_SECONDS="1.5")
    pools = [gateway.context.store.redis.connection_pool for gateway in (default, tuned)]
    assert [(pool.max_connections, getattr(pool, "timeout", None)) for pool in pools] == [(20, 5.0), (3, 1.5)]
