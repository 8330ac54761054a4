"""Replay of dead letters on the real Redis: reopen, re-send to the sink, at most N times, never poison."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import redis.asyncio as aioredis
from aiohttp import web
from cloudevents.http import CloudEvent, from_http

from eco2 import keys
from eco2.dead_letters import domain_of
from eco2.events import EventType, event_id
from eco2.functions.dead_letter import DeadLetterContext, record
from eco2.functions.dead_letter import function as deadletter_function
from eco2.functions.replay import ATTEMPT_EXTENSION, Outcome, Policy, ReplayContext, Replayer, read_letters
from eco2.jobs import JobStatus, JobStore, Stage, TransitionOutcome
from eco2.settings import Settings
from eco2_tools.local.dead_letter_report import read_dead_letters
from tests.support import REDIS_TEST_URL, free_port

SINK = "http://ingress.test/eco2/eco2"


def letter(event_type: str, job_id: str = "job1", *, code: str = "503", **extra: str) -> CloudEvent:
    return CloudEvent(
        {
            "type": event_type,
            "source": "/eco2/gateway",
            "id": event_id(job_id, event_type),
            "subject": job_id,
            "knativeerrorcode": code,
            "knativeerrordest": "http://127.0.0.1:9/",
            "knativeerrordata": '{"error": "model_unavailable"}',
            **extra,
        },
        {"job_id": job_id, "user_id": "user-1", "image_url": "http://x/y.png"},
    )


class Sink:
    """The broker ingress as the replay sees it: records what it is sent, answers `status`."""

    def __init__(self, status: int = 202) -> None:
        self.status = status
        self.events: list[CloudEvent] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.events.append(from_http(dict(request.headers), request.read()))
        return httpx.Response(self.status)


def replayer(store: JobStore, sink: Sink, **policy: Any) -> Replayer:
    http = httpx.AsyncClient(transport=httpx.MockTransport(sink.handler))
    return Replayer(store, http, SINK, Policy(**{"delay_seconds": 0.0, **policy}))


async def failed_at_vision(store: JobStore, job_id: str = "job1", code: str = "503") -> None:
    await store.create(job_id, "user-1")
    await record(letter(EventType.SCAN_REQUESTED, job_id, code=code), DeadLetterContext(store))
    assert await store.status(job_id) is JobStatus.FAILED


async def test_a_transient_letter_reopens_its_job_and_is_sent_once(store: JobStore) -> None:
    await failed_at_vision(store)
    sink = Sink()
    results = await replayer(store, sink).replay_due()
    assert [r.outcome for r in results] == [Outcome.SENT]
    job = await store.get("job1")
    assert job is not None
    assert (job["status"], job["stage"], "error" in job) == ("queued", "queued", False)
    events = await store.events("job1")
    assert [(e.stage, e.status) for e in events] == [("queued", "queued"), ("vision", "failed"), ("queued", "queued")]
    assert events[-1].data == {"reopened": {"attempt": 1, "letter": results[0].letter.ref}}
    [sent] = sink.events
    assert sent["id"] == event_id("job1", EventType.SCAN_REQUESTED)
    assert sent[ATTEMPT_EXTENSION] == "1"
    assert "knativeerrorcode" not in sent.get_attributes()
    # A second tick (or an operator's replay) finds the entry claimed: nothing is sent twice.
    assert await replayer(store, sink).replay_due() == []
    assert len(sink.events) == 1


async def test_the_reopened_job_runs_again_and_a_second_failure_is_recorded_and_replayable(store: JobStore) -> None:
    await failed_at_vision(store)
    sink = Sink()
    await replayer(store, sink).replay_due()
    # The stage takes it again: its transitions apply (the failed mark no longer blocks anything) ...
    running = await store.transition("job1", "user-1", Stage.VISION, JobStatus.RUNNING)
    assert running.outcome is TransitionOutcome.APPLIED
    # ... and if it fails again, the replayed event's letter is recorded again and fails the job again.
    await store.redis.hset(keys.job("job1"), "stage", "queued")  # as if vision had not got that far
    await record(
        CloudEvent({**sink.events[0].get_attributes(), "knativeerrorcode": "500"}, sink.events[0].data),
        DeadLetterContext(store),
    )
    assert await store.status("job1") is JobStatus.FAILED
    letters = await read_letters(store.redis, "scan")
    assert [letter.attempt for letter in letters] == [0, 1]


async def test_attempts_are_limited_and_spaced(store: JobStore) -> None:
    await store.create("job1", "user-1")
    await record(letter(EventType.SCAN_REQUESTED, **{ATTEMPT_EXTENSION: "2"}), DeadLetterContext(store))
    sink = Sink()
    [exhausted] = await replayer(store, sink, max_attempts=2).replay_due()
    assert exhausted.outcome is Outcome.EXHAUSTED
    [waiting] = await replayer(store, sink, max_attempts=3, delay_seconds=3600).replay_due()
    assert waiting.outcome is Outcome.NOT_YET
    assert Policy(delay_seconds=10).due_at(waiting.letter) == waiting.letter.recorded_at + 160  # 10 s * 4^2
    assert sink.events == []
    assert await store.status("job1") is JobStatus.FAILED


async def test_poison_is_never_replayed(store: JobStore) -> None:
    await failed_at_vision(store, code="422")
    sink = Sink()
    for wait in (True, False):
        [result] = await replayer(store, sink).replay_due(wait=wait)
        assert result.outcome is Outcome.POISON
    assert sink.events == []
    assert await store.status("job1") is JobStatus.FAILED


async def test_timeouts_and_429_are_transient(store: JobStore) -> None:
    for n, code in enumerate(("0", "", "429", "408", "500")):
        await failed_at_vision(store, f"job{n}", code=code)
    sink = Sink()
    results = await replayer(store, sink).replay_due()
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert len(sink.events) == 5


async def test_a_refused_send_fails_the_job_again_and_keeps_the_letter_replayable(store: JobStore) -> None:
    await failed_at_vision(store)
    [result] = await replayer(store, Sink(503)).replay_due()
    assert result.outcome is Outcome.SEND_FAILED
    assert await store.status("job1") is JobStatus.FAILED
    sink = Sink()
    [again] = await replayer(store, sink).replay_due()
    assert again.outcome is Outcome.SENT
    assert len(sink.events) == 1


async def test_a_job_that_recovered_otherwise_is_not_replayed(store: JobStore) -> None:
    await failed_at_vision(store)
    await store.redis.hset(keys.job("job1"), "status", "done")
    sink = Sink()
    [result] = await replayer(store, sink).replay_due()
    assert result.outcome is Outcome.SUPERSEDED
    assert sink.events == []


async def test_reopen_is_refused_unless_the_job_failed_at_that_stage(store: JobStore) -> None:
    await failed_at_vision(store)
    wrong = await store.reopen("job1", failed_at=Stage.ANSWER, wait_at=Stage.RULE, message="", data={})
    assert wrong.outcome is TransitionOutcome.REFUSED
    first = await store.reopen("job1", failed_at=Stage.VISION, wait_at=Stage.QUEUED, message="", data={})
    again = await store.reopen("job1", failed_at=Stage.VISION, wait_at=Stage.QUEUED, message="", data={})
    assert (first.outcome, again.outcome) == (TransitionOutcome.APPLIED, TransitionOutcome.REFUSED)
    missing = await store.reopen("nope", failed_at=Stage.VISION, wait_at=Stage.QUEUED, message="", data={})
    assert missing.outcome is TransitionOutcome.MISSING


async def test_letters_go_to_their_domain_stream(store: JobStore, redis_client: aioredis.Redis) -> None:
    assert [domain_of(t) for t in EventType] == ["scan", "scan", "scan", "reward", "reward", "chat", "reward"]
    assert domain_of("eco2.character.catalog.updated") == "auth"
    assert (domain_of("eco2.auth.revoked"), domain_of("eco2.cache.invalidated"), domain_of("x.y")) == (
        "auth",
        "auth",
        "other",
    )
    await record(letter(EventType.REWARD_GRANTED, "job9"), DeadLetterContext(store))
    await record(letter("eco2.auth.revoked", "job9"), DeadLetterContext(store))
    assert await redis_client.xlen(keys.dead_letters("reward")) == 1
    assert await redis_client.xlen(keys.dead_letters("auth")) == 1
    assert await redis_client.xlen(keys.dead_letters("scan")) == 0
    # A letter of no job (a reward for persist) is simply re-sent.
    sink = Sink()
    results = await replayer(store, sink).replay_due("reward")
    assert [r.outcome for r in results] == [Outcome.SENT]
    assert json.loads(json.dumps(sink.events[0].data))["job_id"] == "job9"


async def test_purge_removes_old_letters_only(store: JobStore, redis_client: aioredis.Redis) -> None:
    old = int((time.time() - 7200) * 1000)
    await redis_client.xadd(keys.dead_letters("scan"), {"attributes": "{}", "data": "null"}, id=f"{old}-0")
    await failed_at_vision(store)
    removed = await replayer(store, Sink()).purge(3600)
    assert removed == 1
    assert await redis_client.xlen(keys.dead_letters("scan")) == 1


async def test_status_reads_the_letters_of_every_domain(store: JobStore) -> None:
    await record(letter(EventType.SCAN_REQUESTED, "a"), DeadLetterContext(store))
    await record(letter(EventType.REWARD_GRANTED, "b"), DeadLetterContext(store))
    report = await asyncio.to_thread(read_dead_letters, REDIS_TEST_URL, [])
    assert report["total"] == 2
    assert sum(group["count"] for group in report["groups"]) == 2


async def test_the_sink_counts_letters_per_domain(redis_client: aioredis.Redis) -> None:
    served = deadletter_function()
    ctx = await served.start({"REDIS_URL": REDIS_TEST_URL})
    try:
        for _ in range(2):
            await record(letter(EventType.REWARD_GRANTED, "b"), ctx)
    finally:
        await served.stop()
    sample = served.metrics.registry.get_sample_value
    assert sample("eco2_dead_letters_total", {"domain": "reward", "outcome": "recorded"}) == 1
    assert sample("eco2_dead_letters_total", {"domain": "reward", "outcome": "repeat"}) == 1


async def test_the_function_builds_its_http_client_at_its_first_send_and_closes_it(store: JobStore) -> None:
    received: list[str] = []

    async def ingress(request: web.Request) -> web.Response:
        received.append(request.headers["ce-id"])
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/", ingress)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    env = {"K_SINK": f"http://127.0.0.1:{port}/", "ECO2_REPLAY_DELAY_SECONDS": "0", "REDIS_URL": REDIS_TEST_URL}
    ctx = await ReplayContext.create(Settings.from_env(env, "replay"), env)
    try:
        await failed_at_vision(store)
        assert ctx.replayer is not None
        results = await ctx.replayer.replay_due()
        assert [r.outcome for r in results] == [Outcome.SENT]
        assert received == [event_id("job1", EventType.SCAN_REQUESTED)]
    finally:
        await ctx.aclose()
        await runner.cleanup()
    assert ctx.replayer._http is None  # closed with the function
