"""The rules stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages
from eco2.adapter import EventFunction
from eco2.events import EventType

function = EventFunction("rules", stages.StageContext.create, stages.rules, accepts=EventType.SCAN_CLASSIFIED)
handle_http = function.handle_http
