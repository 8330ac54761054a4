"""The stand-in model server: an OpenAI-compatible Starlette app that plays the vision and language model."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eco2.env import SettingsError
from eco2.model import JOB_HEADER
from eco2.rules import RuleBook
from eco2_tools.standin import replies, samples
from eco2_tools.standin.config import StandinConfig
from eco2_tools.standin.faults import Fault, FaultPlan
from eco2_tools.standin.images import ImageUnavailable, load_image, sample_png
from eco2_tools.standin.limits import ProviderLimits
from eco2_tools.standin.shapes import STANDIN_HEADER, ApiError, ChatRequest, Reply, kind_of, token_estimate
from eco2_tools.standin.stats import CallStats, StandinMetrics

__all__ = ["WARNING_LINE", "StandinConfig", "create_app"]

logger = logging.getLogger("eco2_tools.standin")

WARNING_LINE = "STAND-IN model server, not a real model: answers are canned from known sample images and rules"
MAX_BODY_BYTES = 8 * 1024 * 1024
MODEL_IDS = ("eco2-standin", "eco2-standin-vision", "eco2-standin-answer")


@dataclass
class _State:
    config: StandinConfig
    rules: replies.TextMatcher
    faults: FaultPlan
    limits: ProviderLimits
    stats: CallStats = field(default_factory=CallStats)
    metrics: StandinMetrics = field(default_factory=StandinMetrics)
    http: httpx.AsyncClient | None = None


class _StandinHeader:
    """Pure ASGI middleware: every response says it comes from a stand-in, errors and 404s included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-eco2-standin", b"true")]
            await send(message)

        await self.app(scope, receive, send_marked)


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _read_body(request: Request) -> bytes:
    too_large = ApiError(413, "the request body is larger than 8 MiB", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: Request) -> tuple[Any, int]:
    """The parsed body and its size in bytes."""
    body = await _read_body(request)
    try:
        return json.loads(body), len(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None


def _invalid(exc: ValidationError) -> ApiError:
    first = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return ApiError(400, f"invalid request: {where}: {first['msg']}", code="invalid_request")


async def _fault_response(state: _State, kind: str, fault: Fault) -> JSONResponse:
    state.stats.record_fault()
    state.metrics.faults.labels(kind, str(fault)).inc()
    if fault is Fault.RATE_LIMITED:
        error = ApiError(
            429,
            "stand-in: rate limit injected",
            error_type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": "1"},
        )
    elif fault is Fault.SERVER_ERROR:
        error = ApiError(500, "stand-in: server error injected", error_type="server_error", code="injected")
    else:
        # A hang that outlives the caller's timeout looks like a dead model; one that does not still fails.
        await asyncio.sleep(state.config.hang_seconds)
        error = ApiError(500, "stand-in: hang injected", error_type="server_error", code="injected_hang")
    return _error_response(error)


async def _content(state: _State, chat: ChatRequest, kind: str, request: Request) -> str:
    if kind == "vision":
        url, sample = chat.image_url(), None
        if url is not None:
            if state.http is None:
                raise RuntimeError("the stand-in's lifespan has not run")
            try:
                image = await load_image(url, http=state.http, own_netloc=request.headers.get("host", ""))
            except ImageUnavailable as exc:
                raise ApiError(400, f"invalid image URL: {exc}", code="invalid_image_url") from None
            sample = await asyncio.to_thread(samples.identify, image)
        return replies.classification(sample, chat.user_text(), state.rules)
    if kind == "answer":
        user_messages = chat.user_messages()
        try:
            return replies.answer(user_messages[-1].text() if user_messages else "")
        except replies.MalformedDocument as exc:
            raise ApiError(400, str(exc), code="invalid_answer_document") from None
    if chat.user_messages():
        system = "\n".join(m.text() for m in chat.messages if m.role == "system")
        last = chat.user_messages()[-1].text()
        return replies.chat(system, last, len(chat.user_messages()))
    return replies.generic(len(chat.messages))


def _sse(document: dict[str, Any] | str) -> bytes:
    data = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def _stream(
    reply: Reply, latency: float, include_usage: bool, headers: dict[str, str], done: Callable[[], None]
) -> StreamingResponse:
    pieces = reply.pieces()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield _sse(reply.chunk({"role": "assistant", "content": ""}))
            for piece in pieces:
                # The latency is spread over the pieces, as a real model streams tokens as it makes them.
                await asyncio.sleep(latency / len(pieces))
                yield _sse(reply.chunk({"content": piece}))
            yield _sse(reply.chunk({}, finish_reason="stop"))
            if include_usage:
                yield _sse(reply.usage_chunk())
            yield _sse("[DONE]")
        finally:
            # A streamed call is in flight until its last chunk, or until the client goes away.
            done()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})


async def _respond(state: _State, request: Request, raw: Any, size: int, kind: str) -> Response:
    try:
        chat = ChatRequest.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None
    try:
        # The provider refuses before it does any work, so a refused call costs no latency.
        state.limits.admit(token_estimate(size))
    except ApiError:
        state.stats.record_rate_limited()
        state.metrics.faults.labels(kind, "limit").inc()
        raise
    state.stats.enter()
    released = False

    def done() -> None:
        nonlocal released
        if not released:
            released = True
            state.limits.release()
            state.stats.leave()

    try:
        response = await _admitted(state, request, chat, size, kind, done)
    except BaseException:
        done()
        raise
    if not chat.stream or response.status_code != 200:
        done()
    return response


async def _admitted(
    state: _State, request: Request, chat: ChatRequest, size: int, kind: str, done: Callable[[], None]
) -> Response:
    """The answer to a call the limits let through; a streamed one calls `done` when its stream ends."""
    fault = state.faults.draw(kind)
    if fault is not None:
        return await _fault_response(state, kind, fault)
    content = await _content(state, chat, kind, request)
    reply = Reply(model=chat.model, content=content, prompt_chars=size)
    latency = state.config.latency(kind)
    if chat.stream:
        include_usage = chat.stream_options is not None and chat.stream_options.include_usage
        return _stream(reply, latency, include_usage, state.limits.headers(), done)
    await asyncio.sleep(latency)
    return JSONResponse(reply.completion(), headers=state.limits.headers())


async def _complete(state: _State, request: Request) -> tuple[str, Response]:
    """The call's kind and its response; every call is counted, unreadable and failed ones too."""
    job_id = request.headers.get(JOB_HEADER)
    try:
        raw, size = await _read_json(request)
    except ApiError as error:
        state.stats.record_call("other", job_id)
        return "other", _error_response(error)
    kind = kind_of(raw)
    state.stats.record_call(kind, job_id)
    try:
        return kind, await _respond(state, request, raw, size, kind)
    except ApiError as error:
        return kind, _error_response(error)


def _chat_completions(state: _State) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        kind, response = await _complete(state, request)
        state.metrics.requests.labels(kind, str(response.status_code)).inc()
        state.metrics.seconds.labels(kind).observe(time.perf_counter() - started)
        return response

    return endpoint


class _FaultOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail_next: int = Field(ge=0, le=1_000_000)
    status: Literal[429, 500, "429", "500", "hang"]
    kind: Literal["vision", "answer", "other"] | None = None


class _ConfigChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vision_latency: float | None = None
    answer_latency: float | None = None
    latency_scale: float | None = None
    fault_429: float | None = None
    fault_500: float | None = None
    fault_hang: float | None = None
    hang_seconds: float | None = None
    seed: int | None = None
    requests_per_second: float | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None


def _apply(state: _State, config: StandinConfig) -> None:
    state.config = config
    state.faults.configure(config)
    state.limits.configure(
        config.requests_per_second, config.requests_per_minute, config.tokens_per_minute, config.max_concurrent
    )


def _limits_of(config: StandinConfig) -> ProviderLimits:
    return ProviderLimits(
        requests_per_second=config.requests_per_second,
        requests_per_minute=config.requests_per_minute,
        tokens_per_minute=config.tokens_per_minute,
        max_concurrent=config.max_concurrent,
    )


def _admin_routes(state: _State) -> list[Route]:
    async def faults(request: Request) -> Response:
        try:
            order = _FaultOrder.model_validate((await _read_json(request))[0])
        except ValidationError as exc:
            raise _invalid(exc) from None
        state.faults.fail_next(order.fail_next, Fault(str(order.status)), order.kind)
        return JSONResponse({"pending": state.faults.pending()})

    async def config(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(state.config.as_dict())
        try:
            change = _ConfigChange.model_validate((await _read_json(request))[0])
            updated = state.config.changed(**change.model_dump(exclude_none=True))
        except ValidationError as exc:
            raise _invalid(exc) from None
        except SettingsError as exc:
            raise ApiError(400, str(exc), code="invalid_config") from None
        _apply(state, updated)
        return JSONResponse(updated.as_dict())

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats.snapshot())

    async def reset(request: Request) -> Response:
        state.stats.clear()
        state.faults.clear()
        state.limits.clear()
        return JSONResponse({"reset": True})

    return [
        Route("/v1/standin/faults", faults, methods=["POST"]),
        Route("/v1/standin/config", config, methods=["GET", "POST"]),
        Route("/v1/standin/stats", stats, methods=["GET"]),
        Route("/v1/standin/reset", reset, methods=["POST"]),
    ]


def _public_routes(state: _State) -> list[Route]:
    async def models(request: Request) -> Response:
        data = [{"id": i, "object": "model", "created": 0, "owned_by": "eco2-standin"} for i in MODEL_IDS]
        return JSONResponse({"object": "list", "data": data})

    async def sample_list(request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        listed = [{**dataclasses.asdict(s), "url": f"{base}/samples/{s.name}.png"} for s in samples.SAMPLES]
        return JSONResponse({"samples": listed})

    async def sample_image(request: Request) -> Response:
        sample = samples.by_name(request.path_params["name"])
        if sample is None:
            raise ApiError(404, "no such sample image", code="not_found")
        return Response(sample_png(sample), media_type="image/png")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "standin": True})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", _chat_completions(state), methods=["POST"]),
        Route("/samples", sample_list, methods=["GET"]),
        Route("/samples/{name}.png", sample_image, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _error_response(ApiError(exc.status_code, str(exc.detail), error_type=error_type))


async def _on_crash(request: Request, exc: Exception) -> Response:
    # Never the exception's text: it may carry internals. The log has the traceback.
    logger.error("stand-in request failed", exc_info=exc)
    error = ApiError(500, "the stand-in failed", error_type="server_error", code="internal_error")
    return JSONResponse(error.body(), status_code=500, headers={STANDIN_HEADER: "true"})


def create_app(
    config: StandinConfig,
    *,
    rules: replies.TextMatcher | None = None,
    fetch_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """`rules` defaults to RuleBook.load(); `fetch_transport` lets tests fake the image URL fetches."""
    state = _State(
        config=config,
        rules=RuleBook.load() if rules is None else rules,
        faults=FaultPlan(config),
        limits=_limits_of(config),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.warning(WARNING_LINE)
        state.http = httpx.AsyncClient(
            transport=fetch_transport, follow_redirects=True, headers={"User-Agent": "eco2-standin"}
        )
        # Builds the pixel index now, so the first classification is not the slow one.
        await asyncio.to_thread(samples.identify, sample_png(samples.SAMPLES[0]))
        try:
            yield
        finally:
            await state.http.aclose()
            state.http = None

    app = Starlette(
        routes=[*_public_routes(state), *_admin_routes(state)],
        lifespan=lifespan,
        exception_handlers={ApiError: _on_api_error, HTTPException: _on_http_error, Exception: _on_crash},
    )
    app.add_middleware(_StandinHeader)
    app.state.standin = state
    return app
