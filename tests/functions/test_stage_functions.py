"""The four stage functions, each started alone with `eco2 serve`, driven over HTTP against real Redis
and the stand-in model: both encodings, bad input, the whole scan in sequence, and redelivery."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http

from eco2 import keys
from eco2.events import EventType, ScanRequested, new_event, shard_of
from eco2.jobs import JobStatus, JobStore, Stage
from eco2.rewards import reward_id
from eco2.rules import RuleBook
from eco2_tools.standin.samples import SAMPLES
from tests.support import Child

CHAIN = (
    ("vision", EventType.SCAN_CLASSIFIED),
    ("rules", EventType.SCAN_RULED),
    ("answer", EventType.SCAN_ANSWERED),
    ("reward", EventType.REWARD_GRANTED),
)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def requested(standin_url: str, sample: str = "clear_pet_bottle", **overrides: Any) -> CloudEvent:
    job_id = overrides.pop("job_id", uuid.uuid4().hex)
    data = ScanRequested(
        job_id=job_id,
        user_id=overrides.pop("user_id", "user-1"),
        image_url=f"{standin_url}/samples/{sample}.png",
        user_input=overrides.pop("user_input", None),
    )
    return new_event(EventType.SCAN_REQUESTED, data, source="/eco2/gateway", job_id=job_id)


async def post(http: httpx.AsyncClient, url: str, event: CloudEvent, *, structured: bool = False) -> httpx.Response:
    headers, body = (to_structured if structured else to_binary)(event)
    return await http.post(url, headers=headers, content=body)


def reply_of(response: httpx.Response) -> CloudEvent:
    assert response.status_code == 200, response.text
    return from_http(dict(response.headers), response.content)


async def run_chain(
    http: httpx.AsyncClient, servers: dict[str, Child], first: CloudEvent
) -> tuple[list[CloudEvent], CloudEvent | None]:
    """Deliver `first` to vision and each reply to the next stage; return the inputs and the last reply."""
    inputs: list[CloudEvent] = []
    event: CloudEvent | None = first
    for name, expected in CHAIN:
        assert event is not None, f"{name} got no input"
        inputs.append(event)
        response = await post(http, servers[name].url, event)
        if response.status_code == 202:
            event = None
            continue
        event = reply_of(response)
        # reward's reply is the job's final event: reward.granted, or scan.completed when nothing was granted.
        finals = (EventType.REWARD_GRANTED, EventType.SCAN_COMPLETED)
        assert event["type"] in finals if name == "reward" else event["type"] == expected
        # Every reply keeps the job's shard: the next model stage's Triggers route on it.
        assert event["shard"] == shard_of(first["subject"])
    return inputs, event


def data_of(event: CloudEvent) -> dict[str, Any]:
    data = event.get_data()
    assert isinstance(data, dict)
    return data


def standin_calls(standin_url: str, job_id: str) -> dict[str, int]:
    stats = httpx.get(f"{standin_url}/v1/standin/stats", timeout=5).json()
    return dict(stats["by_job"].get(job_id, {}))


async def test_one_scan_through_the_four_functions(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url, user_input="생수병 다 마셨어요")
    job_id = first["subject"]
    await store.create(job_id, "user-1")
    _, granted = await run_chain(http, stage_servers, first)

    assert granted is not None
    assert granted["type"] == EventType.REWARD_GRANTED
    assert data_of(granted)["character"]["name"] == "페티"
    job = await store.get(job_id)
    assert job is not None
    assert (job["status"], job["stage"], job["progress"]) == ("done", "done", "100")
    result = json.loads(job["result"])
    pipeline = result["pipeline_result"]
    assert set(pipeline) == {"classification", "disposal_rules", "final_answer"}
    assert pipeline["classification"] == {
        "major_category": "재활용폐기물",
        "middle_category": "무색페트병",
        "minor_category": pipeline["classification"]["minor_category"],
        "situation_tags": [],
    }
    assert pipeline["disposal_rules"]["middle_category"] == "무색페트병"
    assert set(pipeline["final_answer"]) == {"disposal_steps", "insufficiencies", "user_answer"}
    assert pipeline["final_answer"]["disposal_steps"]
    assert result["reward"]["name"] == "페티"
    events = [e for e in await store.events(job_id, count=1000) if e.status != "delta"]
    assert [(e.stage, e.progress) for e in events] == [
        ("queued", 0),
        ("vision", 25),
        ("rule", 50),
        ("answer", 75),
        ("reward", 100),
        ("done", 100),
    ]
    assert events[-1].data is not None
    assert events[-1].data["result"] == result
    assert standin_calls(standin_url, job_id) == {"vision": 1, "answer": 1}


async def test_an_insufficient_item_gets_no_reward_and_says_why(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url, sample="clear_pet_bottle_labeled")
    await store.create(first["subject"], "user-1")
    # Not the user's first scan: the default character was granted before (tests/cachesync tests that grant).
    await store.redis.set(keys.reward(reward_id("user-1", "char_eco")), "an-earlier-job")
    _, last = await run_chain(http, stage_servers, first)
    assert last is not None
    assert last["type"] == EventType.SCAN_COMPLETED, "no reward.granted for an insufficient disposal"
    completed = data_of(last)
    assert (completed["reward_reason"], completed["character"]) == ("insufficient", None)
    assert (completed["category"], completed["rule_id"]) == ("재활용폐기물", "recyclable_clear_pet")
    job = await store.get(first["subject"])
    assert job is not None
    result = json.loads(job["result"])
    assert result["reward"] is None
    assert result["reward_reason"] == "insufficient"
    assert result["pipeline_result"]["final_answer"]["insufficiencies"]


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
async def test_every_function_answers_both_encodings(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], standin_url: str, structured: bool
) -> None:
    inputs, _ = await run_chain(http, stage_servers, requested(standin_url))
    for (name, expected), event in zip(CHAIN, inputs, strict=True):
        response = await post(http, stage_servers[name].url, event, structured=structured)
        if name == "reward":
            # A job the gateway did not create (curl'd in, not tracked) ends with no final event: nothing is granted
            # or persisted for it. 202, not 400: the event was decoded in either encoding.
            assert response.status_code == 202, response.text
            continue
        reply = reply_of(response)
        assert reply["type"] == expected
        assert reply["subject"] == event["subject"]
        assert reply["source"] == f"/eco2/{name}"


async def test_every_function_refuses_malformed_requests(
    http: httpx.AsyncClient, stage_servers: dict[str, Child]
) -> None:
    for name, _ in CHAIN:
        url = stage_servers[name].url
        garbage = await http.post(url, content=b"not an event", headers={"content-type": "text/plain"})
        assert garbage.status_code == 400, name
        assert garbage.json()["error"] == "invalid_cloudevent"
        wrong_data = CloudEvent({"type": "eco2.scan.requested", "source": "/t", "id": "x"}, {"job_id": "has spaces!"})
        invalid = await post(http, url, wrong_data)
        assert invalid.status_code == 422, name
        assert "message" in invalid.json()


async def test_redelivery_twice_concurrently_changes_nothing(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url)
    job_id = first["subject"]
    await store.create(job_id, "user-1")
    event: CloudEvent | None = first
    inputs: list[CloudEvent] = []
    granted = 0
    for name, _ in CHAIN:
        assert event is not None
        inputs.append(event)
        # The first delivery arrives twice at once (a broker redelivering while the first is running).
        pair = await asyncio.gather(*(post(http, stage_servers[name].url, event) for _ in range(2)))
        replied = [r for r in pair if r.status_code == 200]
        if name == "reward":
            granted = len(replied)
        else:  # both pass the work on: the first one's reply may be the one that gets lost
            assert len(replied) == 2, name
            assert len({r.headers["ce-id"] for r in replied}) == 1, name
        event = reply_of(replied[0])
    assert granted == 1, "one reward.granted for one reward id"
    calls_after_first = standin_calls(standin_url, job_id)
    events_after_first = await store.events(job_id, count=1000)
    assert calls_after_first == {"vision": 1, "answer": 1}
    assert len([e for e in events_after_first if e.status != "delta"]) == 6

    # The finished job's events, sent again (a replayed chain, a broker restart): nothing re-runs or re-emits.
    for (name, _), event in zip(CHAIN, inputs, strict=True):
        pair = await asyncio.gather(*(post(http, stage_servers[name].url, event) for _ in range(2)))
        assert [(r.status_code, r.content) for r in pair] == [(202, b"")] * 2, name
    assert standin_calls(standin_url, job_id) == calls_after_first
    assert await store.events(job_id, count=1000) == events_after_first


async def test_a_stage_passes_work_on_again_only_while_nothing_after_it_was_recorded(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url)
    job_id = first["subject"]
    await store.create(job_id, "user-1")
    classified = reply_of(await post(http, stage_servers["vision"].url, first))
    # Redelivered before rules ran (vision's reply may have been lost): passed on again, same id.
    again = reply_of(await post(http, stage_servers["vision"].url, first))
    assert again["id"] == classified["id"]
    reply_of(await post(http, stage_servers["rules"].url, classified))
    # Once rules recorded its step, vision's work is known to be passed on: a redelivery emits nothing.
    late = await post(http, stage_servers["vision"].url, first)
    assert (late.status_code, late.content) == (202, b"")
    assert standin_calls(standin_url, job_id) == {"vision": 1}


async def test_cancelled_job_is_dropped_without_a_model_call(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url)
    job_id = first["subject"]
    await store.create(job_id, "user-1")
    await store.transition(job_id, "user-1", Stage.QUEUED, JobStatus.CANCELLED, message="cancelled")
    response = await post(http, stage_servers["vision"].url, first)
    assert (response.status_code, response.content) == (202, b"")
    assert standin_calls(standin_url, job_id) == {}


async def test_model_faults_are_transient_and_the_retry_resumes(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url)
    _inputs, _ = await run_chain(http, stage_servers, first)
    fresh = requested(standin_url)
    httpx.post(f"{standin_url}/v1/standin/faults", json={"fail_next": 1, "status": 429}, timeout=5)
    limited = await post(http, stage_servers["vision"].url, fresh)
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    httpx.post(f"{standin_url}/v1/standin/faults", json={"fail_next": 1, "status": 500}, timeout=5)
    failed = await post(http, stage_servers["vision"].url, fresh)
    assert (failed.status_code, failed.json()["error"]) == (503, "model_unavailable")
    assert reply_of(await post(http, stage_servers["vision"].url, fresh))["type"] == EventType.SCAN_CLASSIFIED
    assert standin_calls(standin_url, fresh["subject"]) == {"vision": 3}


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
async def test_every_sample_image_classifies_to_its_label(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], standin_url: str, sample: Any
) -> None:
    reply = reply_of(await post(http, stage_servers["vision"].url, requested(standin_url, sample=sample.name)))
    classification = data_of(reply)["classification"]
    assert classification["major_category"] == sample.major_category
    assert classification["middle_category"] == sample.middle_category
    assert classification["situation_tags"] == list(sample.situation_tags)
    rule = RuleBook.load().match(sample.major_category, sample.middle_category)
    assert rule is not None, f"no rule for {sample.name}"


async def test_a_character_already_owned_ends_the_scan_with_scan_completed(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    user = f"owner-{uuid.uuid4().hex[:8]}"
    finals = []
    for _ in range(2):
        first = requested(standin_url, user_id=user)
        await store.create(first["subject"], user)
        _, last = await run_chain(http, stage_servers, first)
        assert last is not None
        finals.append(last)
    granted, again = finals
    assert granted["type"] == EventType.REWARD_GRANTED
    assert data_of(granted)["reward_reason"] == "granted"
    assert data_of(granted)["category"] == "재활용폐기물"
    assert again["type"] == EventType.SCAN_COMPLETED, "the second scan of an owned character grants nothing"
    assert data_of(again)["reward_reason"] == "already_owned"
    assert data_of(again)["character"]["character_id"] == data_of(granted)["character"]["character_id"]


async def test_reward_grants_nothing_for_a_job_that_does_not_exist(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    # A forged chain for a job nobody created: every stage may answer (a developer curls them alone), but the last
    # one grants nothing and claims no reward id, so the user's real scan of that character still earns it.
    first = requested(standin_url)
    _, last = await run_chain(http, stage_servers, first)
    assert last is None
    user = data_of(first)["user_id"]
    assert await store.redis.exists(keys.reward(reward_id(user, "char_peti"))) == 0
    assert await store.get(first["subject"]) is None


async def test_an_event_naming_another_user_than_the_jobs_changes_nothing(
    http: httpx.AsyncClient, stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    # alice's job waits at reward; an insider's copy of its scan.answered naming bob comes first: bob is granted
    # nothing and alice's job is untouched, then alice's own event finishes her job with her reward.
    first = requested(standin_url, user_id="alice", user_input="생수병 다 마셨어요")
    job_id = first["subject"]
    await store.create(job_id, "alice")
    event: CloudEvent = first
    for name, _ in CHAIN[:-1]:
        event = reply_of(await post(http, stage_servers[name].url, event))
    assert event["type"] == EventType.SCAN_ANSWERED
    before = await store.get(job_id)
    forged = CloudEvent(dict(event.get_attributes()) | {"id": "forged"}, data_of(event) | {"user_id": "bob"})
    assert (await post(http, stage_servers["reward"].url, forged)).status_code == 202
    assert await store.get(job_id) == before
    assert await store.redis.exists(keys.reward(reward_id("bob", "char_peti"))) == 0
    granted = reply_of(await post(http, stage_servers["reward"].url, event))
    assert granted["type"] == EventType.REWARD_GRANTED
    assert data_of(granted)["user_id"] == "alice"
