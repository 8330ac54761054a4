"""The authz function: Envoy's ext_authz HTTP protocol over the gateway's own check (eco2.gateway.auth).

Envoy forwards each request's method, path and headers here; 200 lets it through with `x-user-id` and
`x-user-role` added upstream, 401 (no/invalid/expired/revoked token) or 403 (a role not allowed) refuses it
with this answer's body. Revocations come from the process's local copy (eco2.cachesync.blacklist).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import ClassVar

import redis.asyncio as aioredis
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2.cachesync.blacklist import Blacklist
from eco2.cachesync.process import BLACKLIST, start_sync
from eco2.cachesync.replica import CacheSync
from eco2.connections import async_redis
from eco2.errors import Eco2Error, error_response
from eco2.gateway.auth import Authenticator
from eco2.gateway.settings import GatewaySettings
from eco2.lifecycle import started
from eco2.settings import Settings

DEFAULT_ROLES = ("user", "admin")
_WARM_WAIT_SECONDS = 5.0


@dataclasses.dataclass
class AuthzState:
    auth: Authenticator
    sync: CacheSync
    client: aioredis.Redis
    roles: frozenset[str]


class Authz:
    name = "authz"
    fast_http: ClassVar[bool] = True

    def __init__(self) -> None:
        self._state: AuthzState | None = None

    @property
    def state(self) -> AuthzState:
        return started(self._state, "authz")

    async def start(self, env: Mapping[str, str] | None = None) -> AuthzState:
        if self._state is None:
            env = dict(os.environ if env is None else env)
            base = Settings.from_env(env, self.name)
            # Behind Envoy every header is the client's: an X-User-ID is never trusted here.
            settings = dataclasses.replace(GatewaySettings.from_env(env, base), trust_user_header=False)
            client = async_redis(base.redis_cache_url, env=env, socket_timeout=2.0)
            sync = start_sync(env, base.redis_cache_url, BLACKLIST, name=f"authz-{os.getpid()}")
            blacklist = Blacklist(sync, client, source="/eco2/authz", leeway_seconds=settings.jwt_leeway_seconds)
            roles = frozenset((env.get("ECO2_AUTHZ_ROLES") or ",".join(DEFAULT_ROLES)).split(","))
            self._state = AuthzState(Authenticator(settings, blacklist), sync, client, roles)
            await sync.wait_warm(_WARM_WAIT_SECONDS)
        return self._state

    async def stop(self) -> None:
        if self._state is not None:
            await self._state.sync.stop()
            await self._state.client.aclose()
            self._state = None

    def metrics_registry(self) -> CollectorRegistry | None:
        """authz keeps no metrics of its own: its metrics port answers an empty page (the scrape's `up` still tells)."""
        return None

    async def handle(self, request: Request) -> Response:
        state = self._state if self._state is not None else await self.start()
        path = request.url.path
        if path == "/healthz":
            return JSONResponse({"status": "ok", "function": self.name})
        if path == "/readyz":
            ready = state.sync.warmed.is_set()
            body = {"status": "ready" if ready else "not_ready", "function": self.name}
            return JSONResponse(body, status_code=200 if ready else 503)
        try:
            principal = await state.auth.authenticate(request)
        except Eco2Error as exc:
            return error_response(exc)
        if principal.role not in state.roles:
            body = {"error": "forbidden_role", "message": f"the role {principal.role!r} may not call this service"}
            return JSONResponse(body, status_code=403)
        return Response(status_code=200, headers={"x-user-id": principal.user_id, "x-user-role": principal.role})
