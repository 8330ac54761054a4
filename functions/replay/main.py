"""The dead-letter replay as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import replay

function = replay.function()
handle_http = function.handle_http
