"""The answer stage streams its text: delta events on the job stream before the answer, joining to its text."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from eco2.errors import StoreUnavailable
from eco2.jobs import JobStatus, JobStore, Stage, TransitionOutcome
from eco2.model import FieldReader
from eco2.stage_work import Change, DeltaWriter, run_once
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


class CountingStore(JobStore):
    """The real store, counting the round trips that carry streamed pieces (and failing one when told to)."""

    calls: list[list[int]]
    fail_next: bool = False

    async def append_deltas(
        self, job_id: str, stage: Stage, pieces: Sequence[tuple[int, str]], *, closed_by: JobStatus
    ) -> TransitionOutcome:
        self.calls.append([index for index, _ in pieces])
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable()
        return await super().append_deltas(job_id, stage, pieces, closed_by=closed_by)


def counting(store: JobStore) -> CountingStore:
    spy = CountingStore(store.redis, ttl_seconds=600)
    spy.calls = []
    return spy


async def deltas_of(store: JobStore, job_id: str) -> list[tuple[int, str]]:
    return [(e.data["index"], e.data["delta"]) for e in await store.events(job_id) if e.status == "delta" and e.data]


async def test_a_burst_of_pieces_is_written_in_few_round_trips_each_its_own_entry(store: JobStore) -> None:
    spy = counting(store)
    await spy.create("j-burst", "u1")
    pieces = [f"조각{n} " for n in range(10)]
    async with DeltaWriter(spy, "j-burst", Stage.ANSWER, JobStatus.RUNNING) as on_text:
        for piece in pieces:  # a zero-latency model: every piece before the first write has answered
            await on_text(piece)
    assert [index for call in spy.calls for index in call] == list(range(10))  # each piece once, in order
    assert len(spy.calls) <= 2  # one round trip for the burst (two if the first write starts before the rest)
    assert await deltas_of(spy, "j-burst") == list(enumerate(pieces))


async def test_a_redelivery_grouped_otherwise_writes_nothing_twice(store: JobStore) -> None:
    await store.create("j-again", "u1")
    pieces = ["하나 ", "둘 ", "셋"]
    async with DeltaWriter(store, "j-again", Stage.ANSWER, JobStatus.RUNNING) as on_text:
        for piece in pieces:
            await on_text(piece)
    # The redelivered stage's stream arrives grouped otherwise: one piece, then two.
    again = [(0, pieces[0])], [(1, pieces[1]), (2, pieces[2])]
    for group in again:
        outcome = await store.append_deltas("j-again", Stage.ANSWER, group, closed_by=JobStatus.RUNNING)
        assert outcome is TransitionOutcome.DUPLICATE
    assert await deltas_of(store, "j-again") == list(enumerate(pieces))


async def test_a_failed_write_fails_the_stream(store: JobStore) -> None:
    spy = counting(store)
    await spy.create("j-fail", "u1")
    spy.fail_next = True

    async def stream() -> None:
        async with DeltaWriter(spy, "j-fail", Stage.ANSWER, JobStatus.RUNNING) as on_text:
            await on_text("첫 조각")

    with pytest.raises(StoreUnavailable):  # the model call ends with it: the stage answers 5xx, the broker retries
        await stream()
    assert await deltas_of(spy, "j-fail") == []


class Said(BaseModel):
    text: str


async def streamed_once(
    spy: CountingStore, job_id: str, pieces: Sequence[str], *, pause_after: int = -1, cancel: bool = False
) -> Any:
    """A stage that streams `pieces` (letting its first write start after piece `pause_after`; the job cancelled
    meanwhile with `cancel`), run as the stages run (run_once): what it recorded."""

    async def compute() -> Said:
        async with DeltaWriter(spy, job_id, Stage.ANSWER, JobStatus.RUNNING) as on_text:
            for number, piece in enumerate(pieces):
                await on_text(piece)
                if number == pause_after:
                    await asyncio.sleep(0.05)  # the write of what came so far goes out, and is answered
            if cancel:
                await spy.cancel(job_id)
        return Said(text="".join(pieces))

    def answered(output: Said) -> Change:
        return Change("u1", Stage.ANSWER, "answered", {"text": output.text})

    return await run_once(spy, job_id, Stage.ANSWER, Said, compute, answered, timeout_seconds=5)


async def test_pieces_no_write_took_go_with_the_stages_transition_in_one_script(store: JobStore) -> None:
    spy = counting(store)
    await spy.create("j-hand", "u1")
    stored = await streamed_once(spy, "j-hand", ["하나 ", "둘 ", "셋"])
    assert stored[1].outcome is TransitionOutcome.APPLIED
    assert spy.calls == []  # no round trip of their own: the burst went with the transition
    events = await spy.events("j-hand")
    assert [(e.status, e.data) for e in events[1:]] == [
        ("delta", {"delta": "하나 ", "index": 0}),
        ("delta", {"delta": "둘 ", "index": 1}),
        ("delta", {"delta": "셋", "index": 2}),
        ("running", {"text": "하나 둘 셋"}),
    ]


async def test_a_write_in_flight_ends_first_and_the_rest_go_with_the_transition(store: JobStore) -> None:
    spy = counting(store)
    await spy.create("j-flight", "u1")
    await streamed_once(spy, "j-flight", ["하나 ", "둘 ", "셋"], pause_after=0)
    assert spy.calls == [[0]]
    assert [(e.status, (e.data or {}).get("index")) for e in await spy.events("j-flight")][1:] == [
        ("delta", 0),
        ("delta", 1),
        ("delta", 2),
        ("running", None),
    ]


async def test_pieces_handed_over_for_a_job_that_ended_meanwhile_are_not_written(store: JobStore) -> None:
    spy = counting(store)
    await spy.create("j-ended", "u1")
    stored = await streamed_once(spy, "j-ended", ["하나 ", "둘 "], cancel=True)
    assert stored[1].outcome is TransitionOutcome.REFUSED
    assert [e.status for e in await spy.events("j-ended")] == ["queued", "cancelled"]


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
    assert FieldReader("user_answer").feed(raw) == expected
    assert json.dumps(expected)  # a plain string, whatever was cut


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_field_streamed_in_pieces_comes_out_whole_and_once(size: int, ascii_only: bool) -> None:
    answer = 'say "hi" \\ to 페트병 é\u00e9 \n ' * 5
    document = json.dumps(
        {"disposal_steps": ['"user_answer": "not this"'], "user_answer": answer, "after": "not this either"},
        ensure_ascii=ascii_only,
    )
    reader = FieldReader("user_answer")
    pieces = [reader.feed(document[i : i + size]) for i in range(0, len(document), size)]
    assert "".join(pieces) == answer
