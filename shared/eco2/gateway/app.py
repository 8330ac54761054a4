"""The gateway's inner ASGI app: routes, and error handling that always answers `{error, message}`."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eco2.errors import Eco2Error, error_response, internal_error
from eco2.gateway.api import Api
from eco2.gateway.context import GatewayContext

log = logging.getLogger("eco2.gateway")


def routes(api: Api) -> list[Route]:
    return [
        Route("/api/v1/scan", api.submit, methods=["POST"]),
        Route("/api/v1/scan/categories", api.categories, methods=["GET"]),
        Route("/api/v1/scan/{job_id}/result", api.result, methods=["GET"]),
        Route("/api/v1/scan/{job_id}/events", api.events, methods=["GET"]),
        Route("/api/v1/scan/{job_id}", api.cancel, methods=["DELETE"]),
        Route("/api/v1/auth/logout", api.logout, methods=["POST"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
    ]


async def _eco2_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Eco2Error)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(Eco2Error("not_found", f"no route {request.url.path}", status=404))
    if exc.status_code == 405:
        message = f"{request.method} is not allowed here"
        return error_response(Eco2Error("method_not_allowed", message, status=405, headers=exc.headers))
    return error_response(Eco2Error("http_error", str(exc.detail), status=exc.status_code, headers=exc.headers))


class CatchAll:
    """The last line: an unexpected exception is logged and answered 500 without its text."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, receive, tracking)
        except Exception:
            log.exception("request crashed", extra={"fields": {"path": scope.get("path", "")}})
            if not started:
                await internal_error()(scope, receive, send)


def build_app(ctx: GatewayContext) -> ASGIApp:
    router = Router(routes(Api(ctx)), redirect_slashes=False)
    handlers = {Eco2Error: _eco2_error, HTTPException: _http_error}
    return CatchAll(ExceptionMiddleware(router, handlers=handlers))
