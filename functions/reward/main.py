"""The reward stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages
from eco2.adapter import EventFunction
from eco2.events import EventType

function = EventFunction("reward", stages.StageContext.create, stages.reward, accepts=EventType.SCAN_ANSWERED)
handle_http = function.handle_http
