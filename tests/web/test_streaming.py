"""The answer stage streams its text: delta events on the job stream before the answer, joining to its text."""

from __future__ import annotations

import json

import httpx
import pytest

from eco2.jobs import JobStatus, JobStore, Stage, TransitionOutcome
from eco2.model import partial_string_field
from tests.functions.test_stage_functions import post, reply_of, requested
from tests.support import Child


async def test_the_answer_streams_deltas_before_its_result(
    stage_servers: dict[str, Child], store: JobStore, standin_url: str
) -> None:
    first = requested(standin_url, user_input="생수병 다 마셨어요")
    job_id = first["subject"]
    await store.create(job_id, "user-1")
    async with httpx.AsyncClient(timeout=30) as http:
        event = first
        for name in ("vision", "rules", "answer"):
            event = reply_of(await post(http, stage_servers[name].url, event))

    events = await store.events(job_id, count=1000)
    kinds = [(e.stage, e.status) for e in events]
    answered = kinds.index(("answer", "running"))
    deltas = [e for e in events if e.status == "delta"]
    assert len(deltas) >= 2, kinds
    assert all(events.index(d) < answered for d in deltas)
    assert [d.data["index"] for d in deltas if d.data] == list(range(len(deltas)))
    final = event.get_data()
    assert isinstance(final, dict)
    text = "".join(d.data["delta"] for d in deltas if d.data)
    assert text == final["final_answer"]["user_answer"]
    assert text.startswith("(stand-in)")


async def test_a_delta_is_recorded_once_and_never_after_the_result(store: JobStore) -> None:
    await store.create("j-delta", "u1")
    assert await store.append_delta("j-delta", Stage.ANSWER, 0, "안녕") is TransitionOutcome.APPLIED
    assert await store.append_delta("j-delta", Stage.ANSWER, 0, "안녕") is TransitionOutcome.DUPLICATE
    assert await store.append_delta("j-delta", Stage.ANSWER, 1, "하세요") is TransitionOutcome.APPLIED
    await store.transition("j-delta", "u1", Stage.ANSWER, JobStatus.RUNNING)
    assert await store.append_delta("j-delta", Stage.ANSWER, 2, "!") is TransitionOutcome.DUPLICATE
    await store.cancel("j-delta")
    assert await store.append_delta("j-delta", Stage.CHAT, 0, "x") is TransitionOutcome.REFUSED
    assert await store.append_delta("nobody", Stage.ANSWER, 0, "x") is TransitionOutcome.MISSING
    job = await store.get("j-delta")
    assert job is not None
    assert (job["status"], job["stage"]) == ("cancelled", "answer")  # deltas never changed the job's state
    statuses = [(e.status, e.data) for e in await store.events("j-delta")]
    assert statuses[1:3] == [("delta", {"delta": "안녕", "index": 0}), ("delta", {"delta": "하세요", "index": 1})]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"steps": [], "user_answer": "abc', "abc"),
        ('{"user_answer": "a\\\\', "a\\"),
        ('{"user_answer": "a\\', "a"),
        ('{"user_answer": "a\\u00', "a"),
        ('{"user_answer": "a\\u00e9b"', "aéb"),
        ('{"user_answer": "say \\"hi\\"", "x": 1}', 'say "hi"'),
        ('{"user_ans', ""),
    ],
)
def test_a_field_is_read_from_a_document_still_being_written(raw: str, expected: str) -> None:
    assert partial_string_field(raw, "user_answer") == expected
    assert json.dumps(expected)  # a plain string, whatever was cut
