"""A model reply read from the SDK's raw response (eco2.model_stream, eco2.model): the SSE wire format, and how a
broken, failed or unreadable reply fails (transient), through the pack's ModelClient over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eco2.errors import ModelUnavailable
from eco2.events import Classification
from eco2.model import ModelClient
from eco2.model_stream import EventData

# Every SSE line end, comments, fields other than data, a data field without a space or a value, several data
# lines joined by newlines, and what follows [DONE] dropped.
EVENTS = [b'{"a": 1}', b'{"b":\n2}', b"x", b""]
BODIES = {
    "LF": b'data: {"a": 1}\n\n: keep-alive\n\nevent: x\nid: 7\ndata: {"b":\ndata: 2}\n\ndata:x\n\ndata\n\n',
    "CRLF": b'data: {"a": 1}\r\n\r\n: keep-alive\r\n\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:x\r\n\r\ndata\r\n\r\n',
    "CR": b'data: {"a": 1}\r\r: keep-alive\r\rdata: {"b":\rdata: 2}\r\rdata:x\r\rdata\r\r',
}
DONE_AND_AFTER = b"data: [DONE]\n\ndata: after\n\n"


def read(chunks: list[bytes]) -> list[bytes]:
    reader = EventData()
    events = [data for chunk in chunks for data in reader.feed(chunk)]
    return events + reader.finish()


@pytest.mark.parametrize("ends", sorted(BODIES))
def test_events_are_the_same_wherever_the_body_is_cut(ends: str) -> None:
    body = BODIES[ends] + DONE_AND_AFTER.replace(b"\n", b"\n" if ends == "LF" else b"\r\n" if ends == "CRLF" else b"\r")
    assert read([body]) == EVENTS
    for cut in range(len(body) + 1):
        assert read([body[:cut], body[cut:]]) == EVENTS, f"cut at {cut}"
    assert read([body[i : i + 1] for i in range(len(body))]) == EVENTS


def test_an_event_the_body_never_ends_is_dropped() -> None:
    assert read([b"data: 1\n\ndata: 2\n"]) == [b"1"]
    assert read([b"data: 1\n\ndata: 2"]) == [b"1"]


class ModelServer:
    """Answers each request on a real socket with the next canned reply; counts the connections it accepted.
    A reply of b"" closes the connection without answering, as a server does to a keep-alive connection that sat
    idle past its timeout."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                reply = self.replies.pop(0)
                if not reply:
                    break
                writer.write(reply)
                await writer.drain()
                if b"content-length: 9999" in reply:  # promised more than it sends: the transfer breaks
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def reply(body: bytes, content_type: str = "text/event-stream", length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {length or len(body)}\r\n\r\n"
    return head.encode() + body


def sse(*documents: Any) -> bytes:
    return b"".join(f"data: {json.dumps(d)}\n\n".encode() for d in documents) + b"data: [DONE]\n\n"


def piece(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


ANSWER = '{"disposal_steps": ["rinse"], "insufficiencies": [], "user_answer": "ok"}'


@pytest.fixture
async def client() -> AsyncIterator[list[ModelClient]]:
    made: list[ModelClient] = []
    yield made
    for model in made:
        await model.aclose()


async def answer(made: list[ModelClient], url: str) -> tuple[list[str], Exception | None]:
    if not made:
        made.append(ModelClient(base_url=url, api_key="test", timeout_seconds=5))
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    try:
        await made[0].answer(
            model="m",
            classification=Classification(major_category="미분류"),
            disposal_rules=None,
            user_input=None,
            job_id="j",
            on_text=on_text,
        )
    except ModelUnavailable as exc:
        return pieces, exc
    return pieces, None


async def test_a_stream_is_read_to_its_end_and_its_connection_reused(client: list[ModelClient]) -> None:
    halves = [piece(ANSWER[:40]), piece(ANSWER[40:])]
    after_done = b'data: {"choices": [{"delta": {"content": "never"}}]}\n\n'
    server = ModelServer([reply(sse(*halves) + after_done), reply(sse(*halves))])
    async with server as url:
        for _ in range(2):
            pieces, failed = await answer(client, url)
            assert failed is None
            assert "".join(pieces) == "ok"
    assert server.connections == 1


@pytest.mark.parametrize(
    "body",
    [
        sse(piece('{"user_answer": "o'), {"error": {"message": "overloaded", "type": "server_error"}}),
        b'data: {"choices": [\n\n',
        sse({"choices": []}),
    ],
    ids=["error document", "unreadable", "no content"],
)
async def test_a_failed_stream_is_a_transient_model_failure(client: list[ModelClient], body: bytes) -> None:
    async with ModelServer([reply(body)]) as url:
        _, failed = await answer(client, url)
    assert isinstance(failed, ModelUnavailable)


async def test_a_transfer_that_breaks_is_a_transient_model_failure(client: list[ModelClient]) -> None:
    async with ModelServer([reply(sse(piece('{"user_answer": "o'))[:40], length=9999)]) as url:
        _, failed = await answer(client, url)
    assert isinstance(failed, ModelUnavailable)
    assert failed.message == "the model did not answer in time"


async def test_a_completion_that_is_not_json_is_a_transient_model_failure() -> None:
    async with ModelServer([reply(b"<html>busy</html>", content_type="text/html")]) as url:
        model = ModelClient(base_url=url, api_key="test", timeout_seconds=5)
        try:
            with pytest.raises(ModelUnavailable):
                await model.classify(
                    model="m", image_url="http://x/y.png", user_input=None, system_prompt="s", job_id="j"
                )
        finally:
            await model.aclose()


async def test_a_connection_closed_without_an_answer_is_sent_once_more(client: list[ModelClient]) -> None:
    # The SDK's own retries are off (the broker retries, with backoff): only a request that got no answer at all
    # goes out again, once; a second such close is the stage's transient failure.
    server = ModelServer([b"", reply(sse(piece(ANSWER)))])
    async with server as url:
        pieces, failed = await answer(client, url)
    assert failed is None
    assert "".join(pieces) == "ok"
    assert server.connections == 2
    twice: list[ModelClient] = []
    try:
        async with ModelServer([b"", b"", reply(sse(piece(ANSWER)))]) as url:
            _, failed = await answer(twice, url)
        assert isinstance(failed, ModelUnavailable)
    finally:
        await twice[0].aclose()
