"""authz: Envoy ext_authz (HTTP) for a Knative ingress: 200 + x-user-id / x-user-role, or 401/403."""

from starlette.requests import Request
from starlette.responses import Response

from eco2.adapter import ServedFunction
from eco2.cachesync.authz import Authz

function = Authz()
_served: ServedFunction = function


async def handle_http(request: Request) -> Response:
    return await function.handle(request)
