"""Chat end to end on the running pack: POST /api/v1/chat → 202 → the chat function streams the stand-in's
answer as delta events (in order, before the final answer, joining to it), grounded in the rule the message
names; the session's history reaches the model; idempotency and ownership as for scans."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from eco2.rules import RuleBook
from eco2_tools.local.runner import LocalPack
from eco2_tools.sse_client import SseMessage, aparse
from tests.gateway.support import bearer

SECRET = "chat-test-secret-0123456789abcdef0123456789"


async def ask(
    http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> tuple[dict[str, Any], list[SseMessage]]:
    accepted = await http.post("/api/v1/chat", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    async with http.stream("GET", accepted.json()["stream_url"], headers=headers) as stream:
        assert stream.status_code == 200
        messages = [m async for m in aparse(stream.aiter_lines())]
    return accepted.json(), messages


async def test_a_chat_answer_streams_in_order_grounded_in_the_rule_and_remembers_the_session(
    start_pack: Callable[..., Any],
) -> None:
    pack: LocalPack = await start_pack(
        None, standin=True, extra_env={"STANDIN_LATENCY_SCALE": "0.02", "ECO2_JWT_SECRET": SECRET}
    )
    headers = bearer("chatter", secret=SECRET)
    rule = RuleBook.load().match_text("페트병")
    assert rule is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pack.options.gateway_port}", timeout=30) as http:
        first, messages = await ask(http, headers, {"message": "다 마신 페트병은 어떻게 버려요?"})
        kinds = [m.event for m in messages]
        assert kinds[0] == "queued"
        assert kinds[-1] == "chat"
        deltas = [json.loads(m.data) for m in messages if m.event == "delta"]
        assert len(deltas) >= 2
        assert kinds.index("chat") > max(i for i, kind in enumerate(kinds) if kind == "delta")
        assert [d["data"]["index"] for d in deltas] == list(range(len(deltas)))
        assert [int(m.id or 0) for m in messages] == sorted(int(m.id or 0) for m in messages)
        final = json.loads(messages[-1].data)
        assert final["status"] == "done"
        text = "".join(d["data"]["delta"] for d in deltas)
        assert text == final["data"]["answer"]
        assert text.startswith("(stand-in)")
        assert rule.steps[0].rstrip(".") in text  # grounded: the rule's first step
        assert final["data"]["rule_id"] == rule.id

        second, messages = await ask(http, headers, {"message": "뚜껑은요?", "session_id": first["session_id"]})
        assert second["session_id"] == first["session_id"]
        final = json.loads(messages[-1].data)
        assert "2번째 질문" in final["data"]["answer"]  # the history reached the model
        assert final["data"]["rule_id"] == rule.id  # the session's rule carried over

        other = await http.get(first["stream_url"], headers=bearer("someone-else", secret=SECRET))
        assert other.status_code == 404


async def test_a_keyed_chat_repeat_is_the_same_job_and_bad_bodies_are_refused(
    start_pack: Callable[..., Any],
) -> None:
    pack: LocalPack = await start_pack(
        None, standin=True, extra_env={"STANDIN_LATENCY_SCALE": "0.02", "ECO2_JWT_SECRET": SECRET}
    )
    headers = {**bearer("keyed", secret=SECRET), "X-Idempotency-Key": "chat-1"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{pack.options.gateway_port}", timeout=30) as http:
        one = await http.post("/api/v1/chat", json={"message": "캔은요?"}, headers=headers)
        two = await http.post("/api/v1/chat", json={"message": "캔은요?"}, headers=headers)
        assert (one.status_code, two.status_code) == (202, 202)
        assert one.json() == two.json()
        assert two.headers.get("Idempotent-Replayed") == "true"
        reused = await http.post("/api/v1/chat", json={"message": "다른 질문"}, headers=headers)
        assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
        empty = await http.post("/api/v1/chat", json={"message": ""}, headers=bearer("keyed", secret=SECRET))
        assert (empty.status_code, empty.json()["error"]) == (422, "invalid_request")
        anonymous = await http.post("/api/v1/chat", json={"message": "안녕"})
        assert anonymous.status_code == 401
