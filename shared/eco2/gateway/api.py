"""The mobile API's handlers: submit, result, events (SSE), cancel, categories, logout, health, metrics."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2.adapter import read_body
from eco2.errors import Conflict, Eco2Error, NotFound, PoisonEvent, RateLimited
from eco2.events import ScanRequested
from eco2.gateway import models
from eco2.gateway.auth import Principal
from eco2.gateway.context import GatewayContext
from eco2.gateway.idempotency import StoredResponse, fingerprint, job_id_for, validate_key
from eco2.gateway.openapi import document
from eco2.gateway.ratelimit import Verdict
from eco2.gateway.sink import SinkUnavailable, new_traceparent, scan_requested
from eco2.gateway.stream import job_stream, resume_after
from eco2.jobs import JobStatus, Stage, TransitionOutcome
from eco2.observability import log_context

log = logging.getLogger("eco2.gateway")

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SINK_FAILED = {"code": "sink_unavailable", "message": "the scan could not be queued"}


class Api:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self._openapi = document()

    # -- submit ---------------------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        started, status = time.perf_counter(), 500
        try:
            response = await self._submit(request)
            status = response.status_code
            return response
        except Eco2Error as exc:
            status = exc.status
            raise
        finally:
            self.ctx.metrics.accept_seconds.labels(str(status)).observe(time.perf_counter() - started)

    async def _submit(self, request: Request) -> Response:
        ctx, settings = self.ctx, self.ctx.settings
        principal = await ctx.auth.authenticate(request)
        key = validate_key(request.headers.get("x-idempotency-key"))
        scan = models.parse_scan_request(
            await read_body(request, settings.max_body_bytes), settings.base.allowed_models
        )
        body = scan.model_dump(mode="json")
        digest = fingerprint(body)
        admission = await ctx.limiter.admit(principal.user_id, key)
        if admission.stored is not None:
            return _replay(admission.stored, digest)  # a replay costs no rate-limit token
        if admission.verdict is Verdict.REFUSED:
            ctx.metrics.rate_limited.inc()
            raise RateLimited(f"too many scans; try again in {admission.retry_after} s", admission.retry_after)
        await ctx.probe.check(scan.image_url)
        job_id = job_id_for(principal.user_id, key)
        traceparent = new_traceparent()
        with log_context(job_id, traceparent):
            created = await ctx.store.create(
                job_id,
                principal.user_id,
                priority=principal.priority.value,
                request=body,
                fields={"traceparent": traceparent, "request_fingerprint": digest},
            )
            if created.outcome is TransitionOutcome.APPLIED:
                return await self._start(principal, key, job_id, scan, digest, traceparent)
            return await self._repeat(principal, key, job_id, scan, digest)

    async def _start(
        self,
        principal: Principal,
        key: str | None,
        job_id: str,
        scan: models.ScanRequestBody,
        digest: str,
        traceparent: str,
    ) -> Response:
        """Send eco2.scan.requested; if the broker does not take it, the job fails now (never silently stalls)."""
        ctx = self.ctx
        data = ScanRequested(
            job_id=job_id,
            user_id=principal.user_id,
            image_url=scan.image_url,
            user_input=scan.user_input,
            model=scan.model,
        )
        sending = time.perf_counter()
        try:
            await ctx.sink.send(scan_requested(data, priority=principal.priority, traceparent=traceparent))
        except SinkUnavailable as exc:
            ctx.metrics.sink_seconds.labels("failed").observe(time.perf_counter() - sending)
            ctx.metrics.sink_sends.labels("failed").inc()
            log.warning("scan not queued", extra={"fields": {"reason": str(exc)}})
            await ctx.store.transition(
                job_id,
                principal.user_id,
                Stage.QUEUED,
                JobStatus.FAILED,
                message="작업을 시작하지 못했어요",
                data={"error": SINK_FAILED},
                fields={"error": json.dumps(SINK_FAILED)},
            )
            stored = StoredResponse(503, _sink_failed_body(key), digest)
        else:
            ctx.metrics.sink_seconds.labels("ok").observe(time.perf_counter() - sending)
            ctx.metrics.sink_sends.labels("ok").inc()
            log.info("scan queued", extra={"fields": {"priority": principal.priority.value}})
            stored = StoredResponse(202, models.accepted(job_id), digest)
        if key is not None:
            await ctx.idempotency.put(principal.user_id, key, stored)
        return _respond(stored)

    async def _repeat(
        self, principal: Principal, key: str | None, job_id: str, scan: models.ScanRequestBody, digest: str
    ) -> Response:
        """A repeat of a submit (same user and idempotency key): answer what the first one answered."""
        ctx = self.ctx
        job = await ctx.store.get(job_id) or {}
        if job.get("request_fingerprint", digest) != digest:
            raise _key_reused()
        if key is not None:
            # Wait only while the first request can still be sending; after that its answer is stored or lost.
            age = time.time() - float(job.get("created_at") or 0)
            wait = max(0.0, ctx.settings.sink_timeout_seconds + 2.0 - age)
            stored = await ctx.idempotency.wait(principal.user_id, key, timeout=wait)
            if stored is not None:
                return _replay(stored, digest)
        job = await ctx.store.get(job_id) or {}
        if job.get("status") == JobStatus.QUEUED:
            # The first request's process died before sending: send again (same event id, the stages dedupe).
            return await self._start(principal, key, job_id, scan, digest, job.get("traceparent") or new_traceparent())
        if job.get("status") == JobStatus.FAILED and SINK_FAILED["code"] in job.get("error", ""):
            return _respond(StoredResponse(503, _sink_failed_body(key), digest))
        return _respond(StoredResponse(202, models.accepted(job_id), digest))

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
        _, job_id, _ = await self._owned_job(request)
        settings = self.ctx.settings
        stream = job_stream(
            self.ctx.store,
            self.ctx.hub,
            self.ctx.metrics,
            job_id,
            after=resume_after(request),
            max_seconds=settings.sse_max_seconds,
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
        return JSONResponse({"categories": self.ctx.categories})

    async def logout(self, request: Request) -> Response:
        principal = await self.ctx.auth.authenticate(request)
        await self.ctx.auth.revoke(principal)
        return Response(status_code=204)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "function": "gateway", "redis": await self.ctx.store.ping()})

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self._openapi)


def _respond(stored: StoredResponse) -> Response:
    return JSONResponse(stored.body, status_code=stored.status)


def _replay(stored: StoredResponse, digest: str) -> Response:
    if stored.fingerprint != digest:
        raise _key_reused()
    response = _respond(stored)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _not_found() -> NotFound:
    # Unknown and someone else's look the same, so job ids cannot be probed.
    return NotFound("not_found", "no such job")


def _key_reused() -> PoisonEvent:
    return PoisonEvent("idempotency_key_reused", "this X-Idempotency-Key was already used for a different request")


def _already_finished(status: str) -> Conflict:
    return Conflict("already_finished", f"the job has already ended ({status})")


def _sink_failed_body(key: str | None) -> dict[str, Any]:
    again = "submit again with a new X-Idempotency-Key" if key is not None else "submit again"
    return {"error": SINK_FAILED["code"], "message": f"the scan could not be queued right now; {again}"}
