"""The vision stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages
from eco2.adapter import EventFunction
from eco2.events import EventType

function = EventFunction("vision", stages.StageContext.create, stages.vision, accepts=EventType.SCAN_REQUESTED)
handle_http = function.handle_http
