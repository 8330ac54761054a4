"""authz: Envoy ext_authz for a Knative ingress (http target: handle_http); its body is eco2.functions.authz."""

from starlette.requests import Request
from starlette.responses import Response

from eco2.adapter import ServedFunction
from eco2.functions.authz import Authz

function = Authz()
_served: ServedFunction = function


async def handle_http(request: Request) -> Response:
    return await function.handle(request)
