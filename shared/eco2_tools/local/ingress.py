"""The broker ingress: accepts CloudEvents over HTTP and publishes them persistently, 202 only after the confirm.

`/healthz` is liveness (the process answers); `/readyz` is readiness: 503 while the broker connection or the
publisher channel is down, when a POST would only get a 503 too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aio_pika.abc import AbstractExchange
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eco2.adapter import decode, read_body
from eco2.errors import BadRequest, error_response
from eco2.sender_auth import presented
from eco2_tools.local.messages import to_message
from eco2_tools.local.metrics import RunnerMetrics

# Why the ingress cannot publish right now, or None when it can.
Readiness = Callable[[], str | None]

log = logging.getLogger("eco2_tools.local.ingress")
MAX_EVENT_BYTES = 512 * 1024


def create_ingress(
    exchange: AbstractExchange,
    metrics: RunnerMetrics,
    readiness: Readiness | None = None,
    *,
    token: str | None = None,
) -> Starlette:
    """The ingress; with `token`, an event without it as its bearer credential is refused 401 before it is read,
    as Knative's broker refuses a sender its EventPolicy does not name."""

    async def accept(request: Request) -> Response:
        if token is not None and not presented(request.headers.get("authorization"), token):
            metrics.ingress.labels("unauthenticated").inc()
            return JSONResponse(
                {"error": "unauthenticated", "message": "events need the pack's sender credential"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        try:
            event = decode(request.headers, await read_body(request, MAX_EVENT_BYTES))
        except BadRequest as exc:
            metrics.ingress.labels("rejected").inc()
            return error_response(exc)
        try:
            # With publisher confirms on, publish() returns once RabbitMQ has taken the message.
            await exchange.publish(to_message(event), routing_key="")
        except Exception:
            log.exception("publish failed")
            metrics.ingress.labels("unavailable").inc()
            return JSONResponse({"error": "broker_unavailable", "message": "the broker did not confirm"}, 503)
        metrics.ingress.labels("accepted").inc()
        return Response(status_code=202)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "component": "ingress"})

    async def ready(_: Request) -> Response:
        problem = readiness() if readiness is not None else None
        if problem is not None:
            return JSONResponse({"error": "broker_unavailable", "message": problem}, 503)
        return JSONResponse({"status": "ready", "component": "ingress"})

    async def prometheus(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/", accept, methods=["POST"]),
            # Knative's broker ingress path is /<namespace>/<broker>; accept it too so K_SINK URLs carry over.
            Route("/{namespace}/{broker}", accept, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
            Route("/readyz", ready, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )
