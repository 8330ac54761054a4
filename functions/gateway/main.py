"""The gateway, the only thing mobile clients talk to (functions-framework http target: handle_http)."""

from starlette.requests import Request
from starlette.responses import Response

from eco2.adapter import ServedFunction
from eco2.gateway.app import Gateway

function = Gateway()
_served: ServedFunction = function  # what `eco2 serve` needs of it, checked by mypy


async def handle_http(request: Request) -> Response:
    return await function.handle(request)
