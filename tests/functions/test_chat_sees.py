"""Chat that sees: a message with a photo is classified and ruled as a scan of that photo is, and the streamed
answer is grounded in that rule; without a photo, as before. `eco2 serve chat` alone, beside the scan's vision
and rules functions, on real Redis and the stand-in model."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eco2.events import ChatRequested, EventType, new_event
from eco2.jobs import JobStore
from eco2.rules import RuleBook
from tests.functions.test_stage_functions import (
    data_of,
    post,
    reply_of,
    requested,
    standin_calls,
)
from tests.support import Child, free_port, start_child


@pytest.fixture(scope="module")
def chat_server(stage_env: dict[str, str], child_log_dir: Path) -> Iterator[Child]:
    port = free_port()
    child = start_child(["serve", "chat", "--port", str(port)], port=port, env=stage_env, log_dir=child_log_dir)
    yield child
    child.stop()


async def chat(
    http: httpx.AsyncClient, server: Child, store: JobStore, message: str, image_url: str | None = None
) -> tuple[str, dict[str, Any], str]:
    """One chat turn delivered to the function: (job id, the job's result, the text its deltas streamed)."""
    job_id, user = uuid.uuid4().hex, "seer"
    await store.create(job_id, user)
    data = ChatRequested(job_id=job_id, user_id=user, session_id=uuid.uuid4().hex, message=message, image_url=image_url)
    response = await post(http, server.url, new_event(EventType.CHAT_REQUESTED, data, source="/tests", job_id=job_id))
    assert response.status_code in (200, 202), response.text
    job = await store.get(job_id)
    assert job is not None
    assert job["status"] == "done", job
    events = await store.events(job_id, count=1000)
    streamed = "".join(str(e.data["delta"]) for e in events if e.status == "delta" and e.data is not None)
    return job_id, json.loads(job["result"]), streamed


async def scanned_rule_id(http: httpx.AsyncClient, servers: dict[str, Child], store: JobStore, url: str) -> str:
    """The rule a scan of the same photo gets: vision, then rules, as the broker would chain them."""
    first = requested(url.rsplit("/samples/", 1)[0], sample=url.rsplit("/", 1)[1].removesuffix(".png"))
    await store.create(first["subject"], "user-1")
    classified = reply_of(await post(http, servers["vision"].url, first))
    ruled = reply_of(await post(http, servers["rules"].url, classified))
    rule_id = data_of(ruled)["rule_id"]
    assert isinstance(rule_id, str)
    return rule_id


async def test_a_chat_with_a_glass_bottle_photo_streams_the_bottles_rule(
    http: httpx.AsyncClient,
    chat_server: Child,
    stage_servers: dict[str, Child],
    store: JobStore,
    standin_url: str,
) -> None:
    photo = f"{standin_url}/samples/glass_bottle.png"
    # The text names another item: what the photo shows wins.
    job_id, result, streamed = await chat(http, chat_server, store, "이건 페트병처럼 버리면 되나요?", photo)
    rule = RuleBook.load().get(await scanned_rule_id(http, stage_servers, store, photo))
    assert rule is not None
    assert rule.middle_category == "유리병"
    assert result["rule_id"] == rule.id, "the same rule a scan of the photo gets"
    assert result["classification"]["middle_category"] == "유리병"
    assert streamed == result["answer"], "streamed as it grew"
    assert streamed.startswith("(stand-in)")
    assert f"‘{rule.display_name}’" in streamed, "the reply names the bottle's rule"
    assert rule.steps[0].rstrip(".") in streamed, "and says its first step"
    assert standin_calls(standin_url, job_id) == {"vision": 1}, "the photo classified once"


async def test_without_a_photo_the_message_alone_grounds_the_answer(
    http: httpx.AsyncClient, chat_server: Child, store: JobStore, standin_url: str
) -> None:
    job_id, result, streamed = await chat(http, chat_server, store, "다 마신 페트병은 어떻게 버려요?")
    rule = RuleBook.load().match_text("페트병")
    assert rule is not None
    assert result["rule_id"] == rule.id
    assert "classification" not in result
    assert f"‘{rule.display_name}’" in streamed
    assert standin_calls(standin_url, job_id) == {}, "no classification without a photo"
