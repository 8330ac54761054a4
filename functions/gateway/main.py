"""The gateway, the only thing mobile clients talk to (http target: handle_http); its body is eco2.functions.gateway."""

from starlette.requests import Request
from starlette.responses import Response

from eco2.adapter import ServedFunction
from eco2.celery_runtime.mode import gateway_sink
from eco2.functions.gateway import Gateway

# The composition root: under ECO2_RUNTIME=celery the scans go to the Celery chain, else to the broker (K_SINK).
function = Gateway(runtime_sink=gateway_sink)
_served: ServedFunction = function  # what `eco2 serve` needs of it, checked by mypy


async def handle_http(request: Request) -> Response:
    return await function.handle(request)
