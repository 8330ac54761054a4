"""The mobile API against the running pack (gateway, real RabbitMQ and Redis, the stand-in model):
progress over SSE in order, resume with Last-Event-ID, cancel mid-pipeline, idempotent resubmits, VIP routing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from eco2.gateway.auth import issue_token
from eco2_tools.local.runner import LocalPack
from eco2_tools.sse_client import SseMessage, aparse
from tests.support import wait_for

SECRET = "pack-test-secret-0123456789abcdef0123456789"
STAGES = ["queued", "vision", "rule", "answer", "reward", "done"]
TERMINAL = {"done", "failed", "cancelled"}


async def start_with_gateway(start_pack: Callable[..., Any], latency_scale: str = "0.02") -> LocalPack:
    pack: LocalPack = await start_pack(
        None, standin=True, extra_env={"STANDIN_LATENCY_SCALE": latency_scale, "ECO2_JWT_SECRET": SECRET}
    )
    return pack


def auth(user: str = "user-1", priority: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(user, SECRET, 600, priority)}"}


def gateway(pack: LocalPack) -> str:
    return f"http://127.0.0.1:{pack.options.gateway_port}"


async def submit(http: httpx.AsyncClient, pack: LocalPack, headers: dict[str, str], sample: str) -> httpx.Response:
    body = {"image_url": f"{pack.model_url}/samples/{sample}.png", "user_input": "이거 어떻게 버려요?"}
    return await http.post(f"{gateway(pack)}/api/v1/scan", json=body, headers=headers)


async def read_stream(
    http: httpx.AsyncClient, url: str, headers: dict[str, str], *, until: Callable[[SseMessage], bool]
) -> list[SseMessage]:
    messages: list[SseMessage] = []
    async with http.stream("GET", url, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        async for message in aparse(response.aiter_lines()):
            messages.append(message)
            if until(message):
                break
    return messages


def standin_calls(pack: LocalPack, job_id: str) -> dict[str, int]:
    stats = httpx.get(f"{pack.model_url}/v1/standin/stats", timeout=5).json()
    return dict(stats["by_job"].get(job_id, {}))


def trigger_deliveries(pack: LocalPack, trigger: str, outcome: str | None = None) -> float:
    outcomes = [outcome] if outcome else ["replied", "acked", "retried", "dead_lettered", "dropped"]
    registry = pack.metrics.registry
    return sum(
        registry.get_sample_value("eco2_runner_deliveries_total", {"trigger": trigger, "outcome": o}) or 0.0
        for o in outcomes
    )


def deliveries(pack: LocalPack, function: str, outcome: str | None = None) -> float:
    """Deliveries to `function` over all its Triggers (a model stage has one per shard, and a VIP twin)."""
    triggers = [name for name, plan in pack.topology.triggers.items() if plan.trigger.subscriber_service == function]
    return sum(trigger_deliveries(pack, trigger, outcome) for trigger in triggers)


async def test_a_scan_streams_every_stage_in_order_and_resumes_without_duplicates(
    start_pack: Callable[..., Any],
) -> None:
    pack = await start_with_gateway(start_pack)
    async with httpx.AsyncClient(timeout=30) as http:
        accepted = await submit(http, pack, auth(), "glass_bottle")
        assert accepted.status_code == 202
        body = accepted.json()
        job_id = body["job_id"]
        assert body == {
            "job_id": job_id,
            "stream_url": f"/api/v1/scan/{job_id}/events",
            "result_url": f"/api/v1/scan/{job_id}/result",
            "status": "queued",
        }
        stream = f"{gateway(pack)}{body['stream_url']}"
        first = await read_stream(http, stream, auth(), until=lambda m: m.event == "rule")
        rest = await read_stream(
            http, stream, {**auth(), "Last-Event-ID": str(first[-1].id)}, until=lambda m: m.event in TERMINAL
        )
        everything = first + rest
        # The answer's text arrives in pieces (`delta` events) before the answer stage's own event.
        deltas = [i for i, m in enumerate(everything) if m.event == "delta"]
        assert deltas
        assert everything[max(deltas) + 1].event == "answer"
        messages = [m for m in everything if m.event != "delta"]
        assert [m.event for m in messages] == STAGES
        assert [m.json()["progress"] for m in messages] == [0, 25, 50, 75, 100, 100]
        seqs = [int(m.id or 0) for m in everything]
        assert seqs == sorted(set(seqs)), "ids strictly increase: nothing repeated after the resume"

        result = await http.get(f"{gateway(pack)}{body['result_url']}", headers=auth())
        assert result.status_code == 200
        payload = result.json()
        assert payload["task_id"] == job_id
        assert payload["status"] == "done"
        assert payload["error"] is None
        pipeline = payload["pipeline_result"]
        assert pipeline["classification"]["middle_category"] == "유리병"
        assert pipeline["disposal_rules"]["rule_id"] == "recyclable_glass_bottle"
        assert pipeline["final_answer"]["disposal_steps"]
        assert payload["reward"]["name"] == "글래시"
        other = await http.get(f"{gateway(pack)}{body['result_url']}", headers=auth("someone-else"))
        assert other.status_code == 404


async def test_cancel_mid_pipeline_ends_the_stream_and_no_later_stage_calls_the_model(
    start_pack: Callable[..., Any],
) -> None:
    # Vision takes ~0.7 s here, so the cancel lands while its model call is running.
    pack = await start_with_gateway(start_pack, latency_scale="0.2")
    async with httpx.AsyncClient(timeout=30) as http:
        body = (await submit(http, pack, auth(), "aluminum_can")).json()
        job_id = body["job_id"]

        async def vision_called() -> bool:
            return standin_calls(pack, job_id).get("vision", 0) == 1

        await wait_for(vision_called, timeout=30, what="the vision model call")
        cancelled = await http.delete(f"{gateway(pack)}/api/v1/scan/{job_id}", headers=auth())
        assert cancelled.status_code == 200
        stream = f"{gateway(pack)}{body['stream_url']}"
        messages = await read_stream(http, stream, auth(), until=lambda m: m.event in TERMINAL)
        assert messages[-1].json()["status"] == "cancelled"

        async def vision_finished() -> bool:
            return deliveries(pack, "vision") >= 1

        await wait_for(vision_finished, timeout=30, what="the vision delivery to finish")
        assert deliveries(pack, "vision", "acked") == 1, "vision dropped its reply for the cancelled job"
        assert deliveries(pack, "rules") == 0
        assert standin_calls(pack, job_id) == {"vision": 1}
        result = (await http.get(f"{gateway(pack)}{body['result_url']}", headers=auth())).json()
        assert result["status"] == "cancelled"


async def test_twenty_concurrent_resubmits_make_one_job_and_one_pipeline(start_pack: Callable[..., Any]) -> None:
    pack = await start_with_gateway(start_pack)
    headers = {**auth(), "X-Idempotency-Key": "retry-after-a-timeout"}
    async with httpx.AsyncClient(timeout=30) as http:
        responses = await asyncio.gather(*(submit(http, pack, headers, "milk_carton") for _ in range(20)))
        assert {r.status_code for r in responses} == {202}
        assert len({r.text for r in responses}) == 1, "every repeat gets the same body"
        job_id = responses[0].json()["job_id"]

        async def done() -> bool:
            response = await http.get(f"{gateway(pack)}/api/v1/scan/{job_id}/result", headers=auth())
            return response.status_code == 200

        await wait_for(done, timeout=60, what="the scan to finish")
        assert standin_calls(pack, job_id) == {"vision": 1, "answer": 1}
        assert deliveries(pack, "vision") == 1


async def test_a_vip_scan_goes_through_the_vip_triggers(start_pack: Callable[..., Any]) -> None:
    pack = await start_with_gateway(start_pack)
    async with httpx.AsyncClient(timeout=30) as http:
        vip = auth("vip-user", priority="vip")
        body = (await submit(http, pack, vip, "snack_wrapper")).json()
        stream = f"{gateway(pack)}{body['stream_url']}"
        messages = await read_stream(http, stream, vip, until=lambda m: m.event in TERMINAL)
        assert messages[-1].event == "done"

    async def reward_delivered() -> bool:
        # `done` reaches the stream while the reward function is still answering its delivery.
        return trigger_deliveries(pack, "reward-vip") == 1

    await wait_for(reward_delivered, timeout=10, what="the reward delivery")
    for stage in ("vision", "rules", "answer", "reward"):
        assert trigger_deliveries(pack, f"{stage}-vip") == 1, stage
        assert deliveries(pack, stage) == 1, f"{stage}: a normal-priority Trigger took the VIP scan too"
