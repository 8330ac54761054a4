"""The answer stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages
from eco2.adapter import EventFunction
from eco2.events import EventType

function = EventFunction("answer", stages.StageContext.create, stages.answer, accepts=EventType.SCAN_RULED)
handle_http = function.handle_http
