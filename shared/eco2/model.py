"""Model client: every model call goes through the openai SDK (its `post`, aiohttp transport) to an OpenAI-compatible
endpoint.

The request shapes here are the protocol the stand-in model server answers too: classification is a
`json_schema` response format named `eco2_classification`, the answer one named `eco2_answer` whose user
message is a JSON document (classification, the matched rule, the user's text).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from eco2.capacity import Budget, Lease, WaitAnnouncer, exhausted_for
from eco2.errors import Eco2Error, ModelUnavailable, PoisonEvent, RateLimited
from eco2.events import Classification, FinalAnswer
from eco2.tracing import child_span

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger("eco2.model")
T = TypeVar("T", Classification, FinalAnswer)
# Told of every model call: which (vision, answer, chat), its error code or None, its perf_counter start.
ModelObserver = Callable[[str, str | None, float], None]
# Called with each new piece of streamed text, in order.
OnText = Callable[[str], Awaitable[None]]

CLASSIFICATION_SCHEMA_NAME = "eco2_classification"
ANSWER_SCHEMA_NAME = "eco2_answer"
# Headers the model client sends on every call so a proxy (or the stand-in's call counter) can attribute it.
JOB_HEADER = "X-Eco2-Job-Id"
STAGE_HEADER = "X-Eco2-Stage"
CHAT_PATH = "/chat/completions"

CLASSIFY_SYSTEM_PROMPT = (
    "당신은 한국 생활폐기물 분리배출 분류기입니다. 사진 속 물건을 대분류(major_category), 중분류"
    "(middle_category, 재활용폐기물일 때), 소분류(minor_category: 물건 이름)로 분류하고, 배출 상태를 나타내는 "
    "상황 태그(situation_tags)를 붙이세요. 대분류는 다음 중 하나입니다: {majors}. 재활용 중분류는 다음 중 "
    "하나입니다: {middles}. 상황 태그는 다음 중에서만 고릅니다: {tags}. JSON으로만 답하세요."
)
ANSWER_SYSTEM_PROMPT = (
    "당신은 이코에코의 친절한 분리배출 도우미입니다. 사용자 메시지의 JSON(classification, disposal_rules, "
    "user_input)을 읽고, 규칙에 따른 배출 단계(disposal_steps), 부족한 점(insufficiencies: 상황 태그로 보아 "
    "사용자가 더 해야 할 일), 사용자에게 건넬 친근한 한국어 답변(user_answer)을 JSON으로만 답하세요."
)

CLASSIFICATION_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "major_category": {"type": "string"},
        "middle_category": {"type": ["string", "null"]},
        "minor_category": {"type": ["string", "null"]},
        "situation_tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["major_category", "middle_category", "minor_category", "situation_tags"],
    "additionalProperties": False,
}
ANSWER_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "disposal_steps": {"type": "array", "items": {"type": "string"}},
        "insufficiencies": {"type": "array", "items": {"type": "string"}},
        "user_answer": {"type": "string"},
    },
    "required": ["disposal_steps", "insufficiencies", "user_answer"],
    "additionalProperties": False,
}


def _response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


# Built once: the SDK serializes the body as given and never changes it.
CLASSIFICATION_FORMAT = _response_format(CLASSIFICATION_SCHEMA_NAME, CLASSIFICATION_JSON_SCHEMA)
ANSWER_FORMAT = _response_format(ANSWER_SCHEMA_NAME, ANSWER_JSON_SCHEMA)


def load_sdk() -> ModuleType:
    """The openai SDK, imported when a model client is built: it costs ~20 MB and ~0.4 s of start-up, and the
    functions that never call a model (rules, reward, dead-letter) must not pay for it. vision and answer build
    their client at start (functions/<name>/main.py), so the import is done before the process reports ready."""
    import openai
    from openai.resources.chat import AsyncChat  # noqa: F401  imported by the client on its first `chat`

    return openai


class ModelClient:
    """One per process: wraps AsyncOpenAI, maps its errors onto the pack's transient/poison split."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_seconds: float,
        observe: ModelObserver | None = None,
        budget: Budget | None = None,
        announcer: WaitAnnouncer | None = None,
    ) -> None:
        openai = load_sdk()
        # Imported with the SDK, whose HTTP client is httpx2: `post` hands its raw response back untouched.
        import httpx2

        from eco2.model_stream import documents

        self._openai = openai
        self._raw = httpx2.Response
        self._documents = documents
        self._observe = observe
        # The shared, provider-aware budget (eco2.capacity); None: calls go out as they come.
        self._budget = budget
        self._announcer = announcer
        # Retries are the broker's job (with backoff and a dead-letter sink), so the SDK must not retry.
        # The SDK's aiohttp transport: its default httpx pool scans every pooled connection on each request.
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=timeout_seconds,
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(timeout=timeout_seconds),
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def classify(
        self,
        *,
        model: str,
        image_url: str,
        user_input: str | None,
        system_prompt: str,
        job_id: str,
    ) -> Classification:
        content: list[dict[str, Any]] = [
            {"type": "text", "text": user_input or "이 물건은 어떻게 버려야 하나요?"},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]
        raw = await self._complete(
            model=model,
            messages=[{"role": "system", "content": system_prompt}, {"role": "user", "content": content}],
            response_format=CLASSIFICATION_FORMAT,
            job_id=job_id,
            stage="vision",
        )
        return _parse_model_json(raw, Classification)

    async def answer(
        self,
        *,
        model: str,
        classification: Classification,
        disposal_rules: dict[str, Any] | None,
        user_input: str | None,
        job_id: str,
        on_text: OnText | None = None,
    ) -> FinalAnswer:
        """The answer; with `on_text`, streamed: each new piece of `user_answer` is passed on as it arrives."""
        document = {
            "classification": classification.model_dump(mode="json"),
            "disposal_rules": disposal_rules,
            "user_input": user_input,
        }
        raw = await self._complete(
            model=model,
            messages=[
                {"role": "system", "content": ANSWER_SYSTEM_PROMPT},
                {"role": "user", "content": json.dumps(document, ensure_ascii=False)},
            ],
            response_format=ANSWER_FORMAT,
            job_id=job_id,
            stage="answer",
            on_text=None if on_text is None else _field_pieces("user_answer", on_text),
        )
        return _parse_model_json(raw, FinalAnswer)

    async def chat(self, *, model: str, messages: list[dict[str, Any]], job_id: str, on_text: OnText) -> str:
        """A free-text chat reply, streamed piece by piece to `on_text`; returns the whole text."""
        return await self._complete(
            model=model, messages=messages, response_format=None, job_id=job_id, stage="chat", on_text=on_text
        )

    async def _complete(self, *, model: str, stage: str, **request: Any) -> str:
        """One model call in a span of its own (a child of the stage's), timed and counted by outcome."""
        started, error = time.perf_counter(), None
        try:
            with child_span(f"model {stage}", **{"gen_ai.request.model": model}) as traced:
                try:
                    return await self._request(model=model, stage=stage, **request)
                except Eco2Error as exc:
                    error = exc.code
                    if traced is not None:
                        traced.outcome(error, failed=True)
                    raise
        finally:
            if self._observe is not None:
                self._observe(stage, error, started)

    async def _request(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        response_format: dict[str, Any] | None,
        job_id: str,
        stage: str,
        on_text: OnText | None = None,
    ) -> str:
        openai = self._openai
        # The SDK's own `post`, as for any request it has no typed method for: the body goes out as written, without
        # `create`'s parameter transform and response models (the costliest part of a call: docs/benchmarks.md). The
        # reply comes back as the SDK's raw HTTP response (cast_to=httpx2.Response), read here: no APIResponse or
        # AsyncStream around it (eco2.model_stream). The wire format and the error mapping are the same: the SDK still
        # raises its status, timeout and connection errors before handing the response over.
        body: dict[str, Any] = {"model": model, "messages": messages}
        if response_format is not None:
            body["response_format"] = response_format
        if on_text is not None:
            body["stream"] = True
        options: dict[str, Any] = {"headers": {JOB_HEADER: job_id, STAGE_HEADER: stage}}
        try:
            response, lease = await self._budgeted_post(model, stage, body, options, stream=on_text is not None)
        except openai.RateLimitError as exc:
            raise RateLimited("the model is rate limiting", _retry_after(exc.response)) from None
        except (openai.APITimeoutError, openai.APIConnectionError):
            raise ModelUnavailable(message="the model did not answer in time") from None
        except openai.InternalServerError:
            raise ModelUnavailable(message="the model failed") from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409) or exc.status_code >= 500:
                raise ModelUnavailable(message="the model failed") from None
            # The model rejected this request itself (bad image URL, unknown model): retrying cannot help.
            raise PoisonEvent("model_rejected", f"the model rejected the request ({exc.status_code})") from None
        try:
            if on_text is not None:
                async with aclosing(self._documents(response)) as chunks:
                    return await _streamed(chunks, on_text)
            content = _content(_json_or_none(response.content), "message")
        finally:
            # A streamed call is in flight at the provider until its stream ends: its slot is held until then.
            if lease is not None and self._budget is not None:
                await self._budget.release(lease)
        if not content:
            raise ModelUnavailable(message="the model returned no content")
        return content

    async def _budgeted_post(
        self, model: str, stage: str, body: dict[str, Any], options: dict[str, Any], *, stream: bool
    ) -> tuple[httpx2.Response, Lease | None]:
        """The request inside a slot of the model's shared budget, and the slot (the caller gives it back once the
        response is read). A 429 pauses the model for every replica for the provider's retry-after and the call
        goes again, within the budget's wait, instead of failing into the broker's minute-long backoff;
        RateLimited (the broker's 429) only when the wait runs out."""
        budget = self._budget
        if budget is None:
            return await self._post(body, options, stream=stream), None
        job = str(options["headers"][JOB_HEADER])
        tokens = budget.tokens_of(*_request_size(body))
        deadline = time.monotonic() + budget.wait_seconds
        while True:
            wait = max(0.0, deadline - time.monotonic())
            lease = await budget.acquire(
                model, wait_seconds=wait, stage=stage, tokens=tokens, on_wait=self._waiting(job, stage, model)
            )
            if lease.queued and self._announcer is not None:
                await self._announcer.ended(job)
            try:
                response = await self._post(body, options, stream=stream)
                await budget.learn(model, response.headers)
                return response, lease
            except self._openai.RateLimitError as exc:
                await budget.release(lease)
                await budget.refused(model, _retry_after(exc.response), exc.response.headers)
                if time.monotonic() >= deadline:
                    raise
            except BaseException:
                await budget.release(lease)
                raise

    def _waiting(self, job_id: str, stage: str, model: str) -> Callable[[], Awaitable[None]] | None:
        """What tells the job it waits for capacity (on the first wait of a call), if the process announces it."""
        announcer = self._announcer
        if announcer is None:
            return None

        async def waiting() -> None:
            await announcer(job_id, stage, model)

        return waiting

    async def _post(self, body: dict[str, Any], options: dict[str, Any], *, stream: bool) -> httpx2.Response:
        """The request, sent once more when the server closed the connection without answering: a pooled
        keep-alive connection the server dropped as it sat idle, just as this call picked it. The server is fine,
        and the SDK reports it as a timeout (its aiohttp transport maps ServerDisconnectedError to ConnectTimeout);
        failing the stage for it would cost a retry by the broker a minute later. Nothing else is retried here:
        the SDK's own retries are off, timeouts and errors are the broker's to retry, with backoff."""
        openai = self._openai
        post: Any = self._client.post
        send = {"body": body, "options": options, "cast_to": self._raw, "stream": stream}
        try:
            first: httpx2.Response = await post(CHAT_PATH, **send)
            return first
        except openai.APIConnectionError as exc:  # APITimeoutError included
            if not _closed_unanswered(exc):
                raise
            log.warning("model connection closed without an answer; sending again")
        again: httpx2.Response = await post(CHAT_PATH, **send)
        return again


def _request_size(body: dict[str, Any]) -> tuple[int, int]:
    """The characters of a request's text and its number of images, for the budget's token estimate."""
    chars, images = 0, 0
    for message in body["messages"]:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if part.get("type") == "image_url":
                images += 1
            else:
                chars += len(str(part.get("text", "")))
    return chars, images


def _closed_unanswered(exc: BaseException) -> bool:
    """Whether the server closed the connection before any answer (somewhere in the SDK's chain of causes)."""
    import aiohttp

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ServerDisconnectedError):
            return True
        cause = cause.__cause__
    return False


async def _streamed(chunks: AsyncIterator[Any], on_text: OnText) -> str:
    """Read a streamed completion, passing each content piece on; the whole content at the end."""
    pieces: list[str] = []
    async for chunk in chunks:
        piece = _content(chunk, "delta")
        if piece:
            pieces.append(piece)
            await on_text(piece)
    if not pieces:
        raise ModelUnavailable(message="the model returned no content")
    return "".join(pieces)


def _json_or_none(body: bytes) -> Any:
    """A completion's JSON; None for a body that is not JSON (the call then has no content: transient)."""
    try:
        return json.loads(body)
    except ValueError:
        return None


def _content(document: Any, part: str) -> str:
    """choices[0].<part>.content of a completion ("message") or a stream chunk ("delta"); '' when absent."""
    try:
        content = document["choices"][0][part].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    return content if isinstance(content, str) else ""


# The body of a JSON string as far as it is whole: plain characters and complete escapes (an escape cut off at the
# end waits for its next piece), matched in C.
_STRING_BODY = re.compile(r'(?:[^"\\]|\\u[0-9a-fA-F]{4}|\\[^u])*')


class FieldReader:
    """Reads string field `name` out of a JSON document that arrives in pieces, each piece scanned once.

    Rescanning the document so far in Python for every piece grew with the square of its length: 2.3 ms of CPU
    for a 490-character answer streamed in 3-character pieces (a model's tokens), 0.3 ms now.
    """

    def __init__(self, name: str) -> None:
        self._key = f'"{name}"'
        self._raw = ""
        self._searched = 0  # where the search for the key resumes
        self._key_at = -1
        self._at = -1  # where the value's unread text begins, once found
        self._closed = False

    def feed(self, piece: str) -> str:
        """The field's text this piece completes ('' when none)."""
        self._raw += piece
        if self._closed or (self._at < 0 and not self._found()):
            return ""
        body = _STRING_BODY.match(self._raw, self._at)
        end = body.end() if body else self._at
        try:
            text = str(json.loads(f'"{self._raw[self._at : end]}"'))
        except ValueError:  # not JSON after all: the whole reply is refused when it ends
            self._closed = True
            return ""
        self._at = end
        self._closed = self._raw.startswith('"', end)
        return text

    def _found(self) -> bool:
        if self._key_at < 0:
            self._key_at = self._raw.find(self._key, self._searched)
            if self._key_at < 0:
                self._searched = max(0, len(self._raw) - len(self._key) + 1)
                return False
        colon = self._raw.find(":", self._key_at + len(self._key))
        start = self._raw.find('"', colon + 1) if colon >= 0 else -1
        if start >= 0:
            self._at = start + 1
        return start >= 0


def _field_pieces(name: str, on_text: OnText) -> OnText:
    """Turns the pieces of a streamed JSON document into the pieces of its string field `name`."""
    reader = FieldReader(name)

    async def on_piece(piece: str) -> None:
        text = reader.feed(piece)
        if text:
            await on_text(text)

    return on_piece


def _retry_after(response: Any) -> float:
    """The provider's wait in seconds: retry-after-ms when given (OpenAI sends it), else retry-after, else 1."""
    try:
        if "retry-after-ms" in response.headers:
            return max(0.0, float(response.headers["retry-after-ms"]) / 1000)
        if "retry-after" not in response.headers:
            reset = exhausted_for(response.headers)
            if reset is not None:
                return reset
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except (TypeError, ValueError):
        return 1.0


def _parse_model_json(raw: str, model: type[T]) -> T:
    # A malformed model answer is worth a retry (models are not deterministic), so it is transient.
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        raise ModelUnavailable(message="the model returned malformed output") from None
