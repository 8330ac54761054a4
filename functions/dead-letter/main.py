"""The dead-letter sink as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import deadletter
from eco2.adapter import EventFunction

function = EventFunction("dead-letter", deadletter.DeadLetterContext.create, deadletter.record)
handle_http = function.handle_http
