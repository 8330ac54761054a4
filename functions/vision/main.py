"""The vision stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages
from eco2.adapter import EventFunction
from eco2.events import EventType
from eco2.settings import Settings


async def setup(settings: Settings) -> stages.StageContext:
    context = await stages.StageContext.create(settings)
    _ = context.model  # built at start: the openai SDK's imports (~0.4 s) come before readiness, not in an event
    return context


function = EventFunction("vision", setup, stages.vision, accepts=EventType.SCAN_REQUESTED)
handle_http = function.handle_http
