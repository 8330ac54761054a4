"""POST /api/v1/chat: the same checks as a scan (auth, rate limit, X-Idempotency-Key, image_url ownership and
SSRF), then a job with its durable outbox entry for eco2.chat.requested (eco2.gateway.submit), and 202 with the
stream to read the answer from. The chat function (eco2.functions.chat) streams the answer into that job's events."""

from __future__ import annotations

import logging
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2.adapter import read_body
from eco2.events import ChatRequested, EventType, new_event, source_of
from eco2.gateway import models
from eco2.gateway.context import GatewayContext
from eco2.gateway.idempotency import fingerprint, validate_key
from eco2.gateway.images import owned_image_url
from eco2.gateway.submit import Submit, repeated, traced

log = logging.getLogger("eco2.gateway")


class Chat:
    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self._submit = Submit(ctx)

    async def __call__(self, request: Request) -> Response:
        ctx = self.ctx
        self._submit._delivery()
        principal = await ctx.auth.authenticate(request)
        key = validate_key(request.headers.get("x-idempotency-key"))
        asked = models.parse_body(await read_body(request, ctx.settings.max_body_bytes), models.ChatRequest)
        digest = fingerprint({"chat": asked.model_dump(mode="json")})
        job_id, repeat = await self._submit.admit(request, principal, key, digest, models.chat_accepted)
        if repeat is not None:
            return repeat
        session_id = asked.session_id or uuid.uuid4().hex
        body = {**asked.model_dump(mode="json"), "session_id": session_id}
        if asked.image_url is not None:
            body["image_url"] = owned_image_url(ctx, asked.image_url, principal)
            await ctx.probe.check(body["image_url"])
        with traced(request, "chat", job_id) as traceparent:
            data = ChatRequested(job_id=job_id, user_id=principal.user_id, **body)
            event = new_event(EventType.CHAT_REQUESTED, data, source=source_of("gateway"), job_id=job_id)
            event["priority"], event["traceparent"] = principal.priority.value, traceparent
            if not await self._submit.enqueue(principal, job_id, event, body, digest, traceparent):
                return repeated(job_id, await ctx.store.get(job_id) or {}, digest, models.chat_accepted)
            log.info("chat accepted")
        return JSONResponse(models.chat_accepted(job_id, session_id=session_id), status_code=202)
