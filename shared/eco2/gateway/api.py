"""The mobile API's handlers beside submit (eco2.gateway.submit): result, events (SSE), cancel, categories, logout,
health, metrics, the OpenAPI document."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from sse_starlette import EventSourceResponse
from sse_starlette.event import ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2.errors import Conflict, NotFound, RateLimited, StoreUnavailable
from eco2.gateway import models
from eco2.gateway.auth import Principal
from eco2.gateway.context import GatewayContext
from eco2.gateway.openapi import document
from eco2.gateway.stream import job_stream, resume_after
from eco2.jobs import TransitionOutcome
from eco2.observability import log_context

log = logging.getLogger("eco2.gateway")

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Api:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self._openapi = document()

    # -- one job --------------------------------------------------------------------------------------------

    async def _owned_job(self, request: Request) -> tuple[Principal, str, dict[str, str]]:
        principal = await self.ctx.auth.authenticate(request)
        job_id = str(request.path_params["job_id"])
        if not _JOB_ID.fullmatch(job_id):
            raise _not_found()
        job = await self.ctx.store.get(job_id)
        if job is None or job.get("user_id") != principal.user_id:
            raise _not_found()
        return principal, job_id, job

    async def result(self, request: Request) -> Response:
        _, job_id, job = await self._owned_job(request)
        if models.is_finished(job):
            return JSONResponse(models.final(job_id, job))
        retry = str(self.ctx.settings.result_retry_after_seconds)
        return JSONResponse(models.progress(job), status_code=202, headers={"Retry-After": retry})

    async def events(self, request: Request) -> Response:
        principal, job_id, _ = await self._owned_job(request)
        settings, limiter = self.ctx.settings, self.ctx.limiter
        slot = await limiter.open_stream(
            principal.user_id, limit=settings.edge.sse_streams_per_user, max_seconds=settings.sse_max_seconds
        )
        if slot is None:
            self.ctx.metrics.rate_limited.inc()
            raise RateLimited(
                f"at most {settings.edge.sse_streams_per_user} event streams at once; close one first",
                retry_after=settings.result_retry_after_seconds,
                code="too_many_streams",
            )
        stream = held_while_open(
            job_stream(
                self.ctx.store,
                self.ctx.hub,
                self.ctx.metrics,
                job_id,
                after=resume_after(request),
                max_seconds=settings.sse_max_seconds,
            ),
            release=lambda: limiter.close_stream(principal.user_id, slot),
        )
        return EventSourceResponse(
            stream, ping=settings.sse_ping_seconds, send_timeout=settings.sse_send_timeout_seconds
        )

    async def cancel(self, request: Request) -> Response:
        _, job_id, job = await self._owned_job(request)
        if models.is_finished(job):
            raise _already_finished(job.get("status", ""))
        with log_context(job_id, job.get("traceparent")):
            outcome = await self.ctx.store.cancel(job_id)
            if outcome is None:
                raise _not_found()
            if outcome.outcome is TransitionOutcome.REFUSED:
                raise _already_finished(outcome.status)
            log.info("scan cancelled")
        return JSONResponse(models.job_state(job_id, await self.ctx.store.get(job_id) or job))

    # -- the rest -------------------------------------------------------------------------------------------

    async def categories(self, request: Request) -> Response:
        return JSONResponse(self.ctx.categories)

    async def logout(self, request: Request) -> Response:
        principal = await self.ctx.auth.authenticate(request)
        await self.ctx.auth.revoke(principal)
        return Response(status_code=204)

    async def characters(self, request: Request) -> Response:
        """The character catalog this process holds (current from the catalog exchange), default first."""
        catalog = self.ctx.caches.caches.catalog
        return JSONResponse(models.characters(catalog.version, catalog.current))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "function": "gateway", "redis": await self.ctx.store.ping()})

    async def readyz(self, request: Request) -> Response:
        """Readiness, as the other functions answer it: Redis answers."""
        ready = await self.ctx.ready()
        body = {"status": "ready" if ready else "not_ready", "function": "gateway"}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)


async def held_while_open(
    stream: AsyncIterator[ServerSentEvent], release: Callable[[], Awaitable[None]]
) -> AsyncIterator[ServerSentEvent]:
    """The stream, releasing its slot however it ends (a slot never released lapses at its deadline)."""
    try:
        async for event in stream:
            yield event
    finally:
        # A client that went away cancels the stream; the release must still reach Redis.
        try:
            with anyio.CancelScope(shield=True):
                await release()
        except StoreUnavailable:
            log.warning("an SSE stream slot was not released; it lapses at its deadline")


def _not_found() -> NotFound:
    # Unknown and someone else's look the same, so job ids cannot be probed.
    return NotFound("not_found", "no such job")


def _already_finished(status: str) -> Conflict:
    return Conflict("already_finished", f"the job has already ended ({status})")
