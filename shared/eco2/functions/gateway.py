"""The gateway function: what `eco2 serve` needs (eco2.adapter.ServedFunction) and a route table for handle_http.

functions-framework calls `handle_http` (functions/gateway/main.py) with every request; the gateway matches it
against Starlette `Route`s itself, calls the endpoint and returns its Response (an SSE stream included).
Errors are always `{error, message}`: an Eco2Error as it says, 404/405 for a miss, a crash logged and 500.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import ClassVar

from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from eco2.errors import Eco2Error, error_response, internal_error
from eco2.gateway.api import Api
from eco2.gateway.chat import Chat
from eco2.gateway.context import GatewayContext
from eco2.gateway.history import History
from eco2.gateway.images import Images
from eco2.gateway.settings import GatewaySettings
from eco2.gateway.submit import Submit
from eco2.gateway.web import web_routes
from eco2.lifecycle import started
from eco2.settings import Settings
from eco2.sink import SinkFactory

log = logging.getLogger("eco2.gateway")

Endpoint = Callable[[Request], Awaitable[Response]]


def routes(ctx: GatewayContext, history: History) -> list[Route]:
    api = Api(ctx)
    return [
        Route("/api/v1/me/characters", history.characters, methods=["GET"]),
        Route("/api/v1/me/scans", history.scans, methods=["GET"]),
        Route("/api/v1/scan", Submit(ctx), methods=["POST"]),
        Route("/api/v1/images", Images(ctx).presign, methods=["POST"]),
        Route("/api/v1/chat", Chat(ctx), methods=["POST"]),
        Route("/api/v1/chat/{job_id}/events", api.events, methods=["GET"]),
        Route("/api/v1/scan/categories", api.categories, methods=["GET"]),
        Route("/api/v1/scan/{job_id}/result", api.result, methods=["GET"]),
        Route("/api/v1/scan/{job_id}/events", api.events, methods=["GET"]),
        Route("/api/v1/scan/{job_id}", api.cancel, methods=["DELETE"]),
        Route("/api/v1/auth/logout", api.logout, methods=["POST"]),
        Route("/api/v1/characters", api.characters, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        *web_routes(ctx),
    ]


def tune_garbage_collector() -> None:
    """Keep full collections rare: with 1,000 open SSE streams one took ~0.3 s and stalled every stream.

    Objects alive after start-up (modules, settings, the app) are frozen out of collection, and a larger
    first threshold lets the per-request garbage die young instead of being promoted into the old generation.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Gateway:
    """The gateway's per-process state: its resources (GatewayContext) and its routes, built once at start."""

    name = "gateway"
    # uvloop + httptools: about a quarter less CPU per request than asyncio + h11 (tests.benchmarks.gateway).
    fast_http: ClassVar[bool] = True

    def __init__(self, runtime_sink: SinkFactory | None = None) -> None:
        """`runtime_sink`: where scans go when the pipeline is not the broker's (functions/gateway/main.py)."""
        self._runtime_sink = runtime_sink
        self._env: dict[str, str] | None = None
        self._context: GatewayContext | None = None
        self._history: History | None = None
        self._routes: list[Route] = []
        self._lock = asyncio.Lock()

    @property
    def context(self) -> GatewayContext:
        """The running gateway's resources (for tests and tools)."""
        return started(self._context, "the gateway")

    async def start(self, env: Mapping[str, str] | None = None) -> GatewayContext:
        """Build the resources once (the environment, or `env`, is read then and kept for a later restart)."""
        async with self._lock:
            if env is not None or self._env is None:
                self._env = dict(os.environ if env is None else env)
            if self._context is None:
                settings = GatewaySettings.from_env(self._env, Settings.from_env(self._env, self.name))
                self._context = await GatewayContext.create(settings, self._env, self._runtime_sink)
                self._history = History(self._context, self._env)
                self._routes = routes(self._context, self._history)
                tune_garbage_collector()
            return self._context

    async def stop(self) -> None:
        async with self._lock:
            # Forget them first, then close them: history reads through the context, so it closes first.
            history, context = self._history, self._context
            self._history, self._context, self._routes = None, None, []
            for resource in (history, context):
                if resource is not None:
                    await resource.aclose()

    def metrics_registry(self) -> CollectorRegistry | None:
        """What the metrics port (eco2.metrics_port) serves: the running gateway's registry, None before it started."""
        return None if self._context is None else self._context.metrics.registry

    def drain(self) -> None:
        """SIGTERM (eco2.serving): end the SSE streams, which would otherwise hold the shutdown for its whole grace."""
        if self._context is not None:
            # From a signal handler: let the event loop run it, between two of its own steps.
            asyncio.get_running_loop().call_soon(self._context.hub.end_streams)

    async def handle(self, request: Request) -> Response:
        """Route one request (building the resources first if no lifespan did) and answer it."""
        if self._context is None:
            await self.start()
        # functions-framework's catch-all route left its own `path` param in the scope: routing starts afresh.
        request.scope["path_params"] = {}
        allowed: set[str] = set()
        for route in self._routes:
            match, child = route.matches(request.scope)
            if match is Match.FULL:
                request.scope["path_params"] = child["path_params"]
                return await self._call(route.endpoint, request)
            if match is Match.PARTIAL and route.methods:
                allowed |= route.methods
        if allowed:
            message = f"{request.method} is not allowed here"
            headers = {"Allow": ", ".join(sorted(allowed))}
            return error_response(Eco2Error("method_not_allowed", message, status=405, headers=headers))
        return error_response(Eco2Error("not_found", f"no route {request.url.path}", status=404))

    async def _call(self, endpoint: Endpoint, request: Request) -> Response:
        try:
            return await endpoint(request)
        except Eco2Error as exc:
            return error_response(exc)
        except Exception:
            log.exception("request crashed", extra={"fields": {"path": request.url.path}})
            return internal_error()
