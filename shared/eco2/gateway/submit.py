"""POST /api/v1/scan: check the caller and the request, write the job with its outbox entry, send, answer 202.

Once the job is written the scan is accepted, whatever happens next: the broker's answer to the send only
decides whether the outbox entry goes now (a 2xx) or stays for the sweeper (anything else, including a
timeout after which nobody knows whether the ingress published it). Nothing after the write fails the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cloudevents.http import CloudEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2 import keys
from eco2.adapter import read_body
from eco2.errors import Eco2Error, PoisonEvent, RateLimited, StoreUnavailable, TransientError
from eco2.events import ScanRequested
from eco2.gateway import models
from eco2.gateway.auth import Principal
from eco2.gateway.context import GatewayContext
from eco2.gateway.idempotency import fingerprint, job_id_for, validate_key
from eco2.gateway.images import owned_image_url
from eco2.gateway.outbox import Outbox, encode
from eco2.gateway.ratelimit import Verdict, client_address
from eco2.gateway.sink import binary, scan_requested
from eco2.jobs import TransitionOutcome
from eco2.observability import log_context
from eco2.sink import SendOutcome, Sink
from eco2.tracing import span

log = logging.getLogger("eco2.gateway")

# The 202 body for a job (its id and, for a repeat, its stored hash).
Accepted = Callable[[str, dict[str, str]], dict[str, Any]]
# Seconds a client is asked to wait when the job store cannot take the scan (nothing was created).
STORE_RETRY_AFTER = "1"


class Submit:
    """The submit endpoint; times every answer into eco2_gateway_accept_seconds by status."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx

    async def __call__(self, request: Request) -> Response:
        started, status = time.perf_counter(), 500
        try:
            response = await self._submit(request)
            status = response.status_code
            return response
        except StoreUnavailable as exc:
            status = exc.status
            raise StoreUnavailable(message=exc.message, headers={"Retry-After": STORE_RETRY_AFTER}) from exc
        except Eco2Error as exc:
            status = exc.status
            raise
        finally:
            self.ctx.metrics.accept_seconds.labels(str(status)).observe(time.perf_counter() - started)

    async def _submit(self, request: Request) -> Response:
        ctx, settings = self.ctx, self.ctx.settings
        self._delivery()
        principal = await ctx.auth.authenticate(request)
        key = validate_key(request.headers.get("x-idempotency-key"))
        scan = models.parse_scan_request(
            await read_body(request, settings.max_body_bytes), settings.base.allowed_models
        )
        body = scan.model_dump(mode="json")
        digest = fingerprint(body)
        job_id, repeat = await self.admit(request, principal, key, digest, models.accepted)
        if repeat is not None:
            return repeat  # a repeat costs no token and no image check
        body["image_url"] = owned_image_url(ctx, scan.image_url, principal)
        await ctx.probe.check(body["image_url"])
        with traced(request, "scan", job_id) as traceparent:
            data = ScanRequested(job_id=job_id, user_id=principal.user_id, **body)
            event = scan_requested(data, priority=principal.priority, traceparent=traceparent)
            if not await self.enqueue(principal, job_id, event, body, digest, traceparent):
                return repeated(job_id, await ctx.store.get(job_id) or {}, digest, models.accepted)
            log.info("scan accepted", extra={"fields": {"priority": principal.priority.value}})
            return JSONResponse(models.accepted(job_id), status_code=202)

    async def admit(
        self, request: Request, principal: Principal, key: str | None, digest: str, accepted: Accepted
    ) -> tuple[str, Response | None]:
        """The rate limits, per user then per client address (a repeat of a keyed request rides free of both),
        and the job id; the repeat's answer if it is one."""
        limiter, edge = self.ctx.limiter, self.ctx.settings.edge
        admission = await limiter.admit(principal.user_id, key)
        if admission.verdict is Verdict.ALLOWED:
            address = client_address(request, edge.trusted_proxies)
            by_client = await limiter.admit_client(address, burst=edge.client_burst, per_second=edge.client_per_second)
            if by_client.verdict is Verdict.REFUSED:
                if key is not None:
                    await limiter.unmark_charge(principal.user_id, key)
                admission = by_client
        if admission.verdict is Verdict.REFUSED:
            self.ctx.metrics.rate_limited.inc()
            raise RateLimited(f"too many requests; try again in {admission.retry_after} s", admission.retry_after)
        job_id = job_id_for(principal.user_id, key)
        if admission.verdict is Verdict.PAID:
            job = await self.ctx.store.get(job_id)
            if job is not None:
                return job_id, repeated(job_id, job, digest, accepted)
        return job_id, None

    def _delivery(self) -> tuple[Sink, Outbox]:
        if self.ctx.sink is None or self.ctx.outbox is None:
            raise TransientError("sink_unavailable", "this gateway has no broker to send to (K_SINK)")
        return self.ctx.sink, self.ctx.outbox

    async def enqueue(
        self, principal: Principal, job_id: str, event: CloudEvent, body: dict[str, Any], digest: str, traceparent: str
    ) -> bool:
        """Write the job with its outbox entry, then send once; False when the job already existed."""
        sink, outbox = self._delivery()
        headers, payload = binary(event)
        entry = encode(headers, payload)
        created = await self.ctx.store.create(
            job_id,
            principal.user_id,
            priority=principal.priority.value,
            request=body,
            fields={"traceparent": traceparent, "request_fingerprint": digest},
            also=lambda pipe: outbox.add(pipe, job_id, entry),
        )
        if created.outcome is not TransitionOutcome.APPLIED:
            return False
        await self._replicate(job_id)
        await self._send(sink, outbox, job_id, headers, payload)
        return True

    async def _replicate(self, job_id: str) -> None:
        """With ECO2_SUBMIT_WAIT_REPLICAS, hold the 202 until that many replicas have the job and its outbox entry
        (before the send, so no stage ever sees a job a failover then loses)."""
        settings = self.ctx.settings
        if settings.submit_wait_replicas == 0:
            return
        mark = keys.replication_mark(settings.instance)
        try:
            acknowledged = await self.ctx.store.replicated(
                settings.submit_wait_replicas, settings.submit_wait_timeout_ms, mark=mark
            )
        except StoreUnavailable:  # the job and its outbox entry are written: the sweeper still sends it
            acknowledged = 0
        if acknowledged < settings.submit_wait_replicas:
            self.ctx.metrics.submit_unreplicated.inc()
            log.warning(
                "scan accepted before its replicas acknowledged it",
                extra={"fields": {"job_id": job_id, "replicas": acknowledged}},
            )

    async def _send(self, sink: Sink, outbox: Outbox, job_id: str, headers: dict[str, str], body: bytes) -> None:
        """Send once; on a 2xx the outbox entry goes, otherwise it stays for the sweeper. Never raises."""
        metrics = self.ctx.metrics
        sending = time.perf_counter()
        outcome = await sink.send(headers, body)
        metrics.sink_seconds.labels(outcome.value).observe(time.perf_counter() - sending)
        metrics.sink_sends.labels("submit", outcome.value).inc()
        try:
            if outcome is SendOutcome.OK:
                await outbox.remove(job_id)
            else:
                log.warning("scan send deferred to the outbox", extra={"fields": {"outcome": outcome.value}})
                # Due after the first backoff step rather than the whole lease the entry was written with.
                await outbox.retry_later(job_id, self.ctx.settings.outbox_backoff_seconds)
        except StoreUnavailable:
            # Left as written: if the broker has the event the sweeper sends it once more (same id; the stages
            # deduplicate), else it is due when its lease ends. The scan is accepted either way.
            log.warning(
                "scan accepted, but its outbox entry could not be updated", extra={"fields": {"job_id": job_id}}
            )


@contextmanager
def traced(request: Request, what: str, job_id: str) -> Iterator[str]:
    """The span of one accepted submit, continuing the caller's `traceparent` header when it sends a valid one;
    yields the traceparent its event carries (every stage's span descends from it). Logs inside name the job."""
    incoming = request.headers.get("traceparent")
    attributes = {"eco2.job_id": job_id}
    with (
        span(f"gateway {what}", incoming, kind="server", attributes=attributes) as current,
        log_context(job_id, current.traceparent),
    ):
        yield current.traceparent


def repeated(job_id: str, job: dict[str, str], digest: str, accepted: Accepted) -> Response:
    """A repeat of a keyed submit whose job exists: the job is the record, so the answer is the same 202."""
    if job.get("request_fingerprint", digest) != digest:
        raise PoisonEvent("idempotency_key_reused", "this X-Idempotency-Key was already used for a different request")
    response = JSONResponse(accepted(job_id, job), status_code=202)
    response.headers["Idempotent-Replayed"] = "true"
    return response
