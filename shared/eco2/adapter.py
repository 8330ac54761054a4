"""The function adapter: serves `async handle(event) -> CloudEvent | None` with functions-framework's http signature.

functions-framework throws a `cloud_event` function's return value away, so every function is an http
function: decode the request (binary or structured), call the handler, answer the reply in binary mode
(the broker publishes it), or 202 with no body. Poison events get 400/422 (never retried), transient
failures 5xx/429 (retried by the broker); no error body ever carries exception text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http
from prometheus_client.registry import CollectorRegistry
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from eco2.binary import binary_event, binary_headers, encode
from eco2.errors import (
    BadRequest,
    Eco2Error,
    PayloadTooLarge,
    PoisonEvent,
    TransientError,
    error_response,
    internal_error,
)
from eco2.events import SPECVERSION
from eco2.observability import FunctionMetrics, configure_logging, log_context
from eco2.settings import Settings
from eco2.tracing import configure_tracing, shutdown_tracing, span

log = logging.getLogger("eco2.adapter")
STRUCTURED_CONTENT_TYPE = "application/cloudevents"
BATCH_CONTENT_TYPE = "application/cloudevents-batch"
# CloudEvents 1.0: attribute names are lower-case ASCII letters and digits.
ATTRIBUTE_NAME = re.compile(r"[a-z0-9]+")
# Outcomes that mark an event's span as failed (a poison event is the sender's error, not this function's).
FAILED_OUTCOMES = frozenset({"transient", "error"})


class Resources(Protocol):
    """What a function builds once per process (clients, caches) and closes on shutdown."""

    async def aclose(self) -> None: ...

    async def ready(self) -> bool:
        """Readiness: the dependencies this function needs answer (Redis, a warmed cache)."""
        ...


R = TypeVar("R", bound=Resources)
Handler = Callable[[CloudEvent, R], Awaitable[CloudEvent | None]]


class EventFunction(Generic[R]):
    """One function: its name, how to build its per-process resources, and its handler."""

    # The HTTP stack it is served with: asyncio + h11 for the event-driven stages, where idle memory counts
    # (uvloop and httptools add ~1–3 MB); uvloop + httptools for request-heavy functions such as the gateway,
    # where they cut CPU per request by about a quarter (tests.benchmarks.gateway), and for the functions that
    # call the model (eco2.stage_context.ModelFunction), which hold the openai SDK's ~21 MB anyway.
    fast_http: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        setup: Callable[[Settings], Awaitable[R]],
        handle: Handler[R],
        *,
        accepts: str | None = None,
    ) -> None:
        self.name = name
        self.accepts = accepts
        self._setup = setup
        self._handle = handle
        self._resources: R | None = None
        self._settings: Settings | None = None
        self._lock = asyncio.Lock()
        self.metrics = FunctionMetrics(name)
        self.draining = False  # SIGTERM came: not ready, no new delivery; the ones in flight finish

        # functions-framework wants a plain function as its target, not a bound method.
        async def handle_http(request: Request) -> Response:
            return await self.http(request)

        self.handle_http = handle_http

    async def start(self, env: Mapping[str, str] | None = None) -> R:
        """Build settings and resources once; concurrent first requests share the one build."""
        async with self._lock:
            if self._resources is None:
                settings = Settings.from_env(os.environ if env is None else env, self.name)
                self._resources = await self._setup(settings)
                self._settings = settings
                self.metrics.started()
            return self._resources

    async def stop(self) -> None:
        async with self._lock:
            if self._resources is not None:
                await self._resources.aclose()
                self._resources = None

    def metrics_registry(self) -> CollectorRegistry:
        """What the metrics port (eco2.metrics_port) serves: this function's own registry."""
        return self.metrics.registry

    def drain(self) -> None:
        """Called on SIGTERM (eco2.serving): readiness answers 503 and a new delivery is refused (retried)."""
        self.draining = True

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError(f"function {self.name} has not started")
        return self._settings

    async def http(self, request: Request) -> Response:
        """The functions-framework http target: events on POST /, health beside them (the metrics have a port of
        their own, eco2.metrics_port: /metrics here is a 404 like any other path)."""
        path, method = request.url.path.rstrip("/") or "/", request.method
        if path == "/healthz" and method in ("GET", "HEAD"):
            # Liveness: the process serves. Readiness (below) is what Knative routes by.
            return JSONResponse({"status": "ok", "function": self.name, "started": self._resources is not None})
        if path == "/readyz" and method in ("GET", "HEAD"):
            return await self._readiness()
        if path != "/":
            return JSONResponse({"error": "not_found", "message": f"no route {path}"}, status_code=404)
        if method != "POST":
            return JSONResponse(
                {"error": "method_not_allowed", "message": "POST a CloudEvent to /"},
                status_code=405,
                headers={"Allow": "POST"},
            )
        return await self._deliver(request)

    async def _readiness(self) -> Response:
        if self.draining:
            return JSONResponse({"status": "draining", "function": self.name}, status_code=503)
        try:
            resources = self._resources if self._resources is not None else await self.start()
            ready = await resources.ready()
        except Exception:
            log.exception("readiness check failed")
            ready = False
        body = {"status": "ready" if ready else "not_ready", "function": self.name}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def asgi_post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST / straight from ASGI (eco2.adapter.Lifespan), past functions-framework's and Starlette's layers
        (their per-request cost is paid on every delivery: docs/benchmarks.md): the same delivery, the same answers."""
        try:
            response = await self._deliver(Request(scope, receive))
        except Exception:  # only the resources' first build can raise here; the delivery answers its own errors
            log.exception("function could not start")
            response = internal_error()
        await response(scope, receive, send)

    async def _deliver(self, request: Request) -> Response:
        if self.draining:  # the broker redelivers it to a replica that is not going away
            return error_response(TransientError("shutting_down", "this replica is shutting down"))
        started = time.perf_counter()
        # The lock in start() is only for the first requests of a process; later ones skip it.
        resources = self._resources if self._resources is not None else await self.start()
        try:
            event = decode(request.headers, await read_body(request, self.settings.max_event_bytes))
        except Eco2Error as exc:
            self.metrics.observe("unknown", _outcome_of(exc), started)
            log.warning("event refused", extra={"fields": {"error": exc.code}})
            return error_response(exc)
        event_type = str(event["type"])
        # A span per event, child of the event's traceparent; the reply carries this span's, so one scan is
        # one trace from the gateway to its last stage. Every log line inside names the job, event and trace.
        with span(f"{self.name} {event_type}", event.get("traceparent"), event=event) as traced:
            with log_context(event.get("subject"), traced.traceparent, event["id"]):
                outcome, response = await self._answer(event, event_type, resources, traced.traceparent)
            traced.outcome(outcome, failed=outcome in FAILED_OUTCOMES)
        self.metrics.observe(event_type, outcome, started)
        return response

    async def _answer(self, event: CloudEvent, event_type: str, resources: R, traceparent: str) -> tuple[str, Response]:
        """Handle one decoded event: its outcome (for the metrics and the span) and the HTTP answer."""
        try:
            if self.accepts is not None and event_type != self.accepts:
                raise PoisonEvent("unexpected_type", f"{self.name} accepts {self.accepts}, not {event_type}")
            # The stage's own budget (model call, lease wait) plus the grace its writes get: a timed-out
            # model call or a busy lease answers its own clean 5xx before this fires.
            async with asyncio.timeout(self.settings.work_seconds + self.settings.store_grace_seconds):
                reply = await self._handle(event, resources)
            log.info("handled", extra={"fields": {"type": event_type, "replied": reply is not None}})
        except Eco2Error as exc:
            log.warning("event failed", extra={"fields": {"type": event_type, "error": exc.code}})
            return _outcome_of(exc), error_response(exc)
        except TimeoutError:
            log.warning("event timed out", extra={"fields": {"type": event_type}})
            return "transient", error_response(TransientError("timeout", "the stage ran out of time"))
        except Exception:
            log.exception("event crashed", extra={"fields": {"type": event_type}})
            return "error", internal_error()
        if reply is None:
            return "no_reply", Response(status_code=202)
        reply["traceparent"] = traceparent
        self.metrics.emit(str(reply["type"]))
        headers, body = encode(reply)
        return "replied", Response(body, status_code=200, headers=headers)


def _outcome_of(exc: Eco2Error) -> str:
    return "poison" if isinstance(exc, PoisonEvent) else "transient"


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; a larger body is a poison event, not a reason to run out of memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(message=f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(message=f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("client_disconnected", "the request body was cut short") from None
    return b"".join(chunks)


def decode(headers: Any, body: bytes) -> CloudEvent:
    """One binary or structured CloudEvent from an HTTP request; anything else is a 400 naming what is wrong."""
    raw_type, attributes = binary_headers(headers)
    content_type = (raw_type or "").split(";")[0].strip().lower()
    if content_type.startswith(BATCH_CONTENT_TYPE):
        raise _invalid("batched CloudEvents are not accepted: send one event per request")
    structured = content_type.startswith(STRUCTURED_CONTENT_TYPE)
    if structured:
        attributes = _structured_attributes(body)
    elif not attributes:
        raise _invalid(
            "not a valid CloudEvent: binary mode needs ce-specversion, ce-id, ce-source and ce-type headers; "
            f"structured mode the content type {STRUCTURED_CONTENT_TYPE}+json"
        )
    _check_attributes(attributes)
    if not structured:
        return binary_event(attributes, raw_type, body)
    try:
        return from_http(headers, body)
    except CloudEventError as exc:
        raise _invalid(_describe(exc)) from None
    except (ValueError, TypeError, UnicodeDecodeError):
        raise _invalid("the body is not a CloudEvent") from None


def _structured_attributes(body: bytes) -> dict[str, str]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid("not a valid CloudEvent: the structured body is not JSON") from None
    if not isinstance(document, dict):
        raise _invalid("not a valid CloudEvent: the structured body must be one JSON object")
    if "data" in document and "data_base64" in document:
        raise _invalid("data and data_base64 must not both be present")
    encoded = document.get("data_base64")
    if encoded is not None:
        try:
            base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("data_base64 is not valid base64") from None
    return {k: str(v) for k, v in document.items() if k not in ("data", "data_base64")}


def _check_attributes(attributes: dict[str, str]) -> None:
    # HTTP header names are case-insensitive (RFC 9110), so ce-MyExt arrives as `myext`; a structured
    # document's names are taken as written.
    for name in attributes:
        if not ATTRIBUTE_NAME.fullmatch(name):
            raise _invalid(f"attribute name {name[:40]!r} is invalid: lower-case letters and digits only")
    for required in ("specversion", "id", "source", "type"):
        if not attributes.get(required):
            raise _invalid(f"missing required attribute: {required}")
    if attributes["specversion"] != SPECVERSION:
        raise _invalid(f"specversion {attributes['specversion'][:20]!r} is not supported (only {SPECVERSION})")


def _invalid(message: str) -> BadRequest:
    return BadRequest("invalid_cloudevent", message)


def _describe(exc: CloudEventError) -> str:
    # The SDK's messages name the missing attribute or the encoding problem and carry no internals.
    text = str(exc).strip() or type(exc).__name__
    return f"not a valid CloudEvent: {text[:300]}"


class ServedFunction(Protocol):
    """What `eco2 serve` needs of the `function` object in `functions/<name>/main.py` (beside `handle_http`).

    `start` builds the per-process resources (idempotent) from `env` (default: the process environment);
    `stop` closes them. `fast_http` picks uvloop + httptools over asyncio + h11. `metrics_registry` is what the
    metrics port serves (None until the function has one).
    """

    name: str
    fast_http: ClassVar[bool]

    async def start(self, env: Mapping[str, str] | None = None) -> object: ...

    async def stop(self) -> None: ...

    def metrics_registry(self) -> CollectorRegistry | None: ...


class Lifespan:
    """ASGI wrapper that builds the function's resources at process start and closes them on shutdown, and hands
    an event function's POST / straight to it.

    functions-framework's ASGI app has no lifespan hooks; under plain `functions-framework --asgi` the
    resources are built lazily on the first request instead.
    """

    def __init__(self, app: ASGIApp, function: ServedFunction) -> None:
        self._app = app
        self._function = function
        # An event function's POST / skips the framework's layers (EventFunction.asgi_post); the gateway has none.
        self._post: ASGIApp | None = getattr(function, "asgi_post", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            if self._post is not None and scope["type"] == "http" and _is_post_root(scope):
                await self._post(scope, receive, send)
                return
            await self._app(scope, receive, send)
            return
        await receive()
        try:
            configure_logging(self._function.name, (os.environ.get("LOG_LEVEL") or "INFO").upper())
            configure_tracing(self._function.name, os.environ)
            await self._function.start()
        except Exception as exc:
            await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self._function.stop()
        await asyncio.to_thread(shutdown_tracing)
        await send({"type": "lifespan.shutdown.complete"})


def _is_post_root(scope: Scope) -> bool:
    return bool(scope["method"] == "POST" and not scope["path"].rstrip("/"))
