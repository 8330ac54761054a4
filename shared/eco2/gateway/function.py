"""The gateway as a functions-framework http function: the surface `eco2 serve` expects, Starlette routing inside."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

from cloudevents.http import CloudEvent
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from eco2.adapter import EventFunction
from eco2.errors import PoisonEvent
from eco2.gateway.app import build_app
from eco2.gateway.context import GatewayContext
from eco2.gateway.settings import GatewaySettings
from eco2.settings import Settings


class Delegate(Response):
    """A response that hands the request to an inner ASGI app (routing, SSE streaming) with its own scope."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # functions-framework's catch-all route left its own path params in the scope.
        await self._app({**scope, "path_params": {}}, receive, send)


async def _no_events(event: CloudEvent, context: GatewayContext) -> CloudEvent | None:
    raise PoisonEvent("not_a_consumer", "the gateway consumes no CloudEvents")


def tune_garbage_collector() -> None:
    """Keep full collections rare: with 1,000 open SSE streams one took ~0.3 s and stalled every stream.

    Objects alive after start-up (modules, settings, the app) are frozen out of collection, and a larger
    first threshold lets the per-request garbage die young instead of being promoted into the old generation.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class GatewayFunction(EventFunction[GatewayContext]):
    """A EventFunction in shape only (name, start, stop, settings, handle_http), so serving runs it as is."""

    fast_http = True

    def __init__(self) -> None:
        super().__init__("gateway", self._build, _no_events)
        self._env: dict[str, str] = {}
        self._app: ASGIApp | None = None

    async def start(self, env: Mapping[str, str] | None = None) -> GatewayContext:
        if env is not None or not self._env:
            self._env = dict(os.environ if env is None else env)
        return await super().start(self._env)

    @property
    def context(self) -> GatewayContext:
        """The running gateway's resources (for tests and tools)."""
        if self._resources is None:
            raise RuntimeError("the gateway has not started")
        return self._resources

    async def stop(self) -> None:
        await super().stop()
        self._app = None

    async def _build(self, settings: Settings) -> GatewayContext:
        context = await GatewayContext.create(GatewaySettings.from_env(self._env, settings))
        self._app = build_app(context)
        tune_garbage_collector()
        return context

    async def http(self, request: Request) -> Response:
        """Every path comes here; build resources if no lifespan did, then let the inner app route."""
        if self._app is None:
            await self.start()
        assert self._app is not None
        return Delegate(self._app)
