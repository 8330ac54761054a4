"""The dead-letter sink as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import deadletter

function = deadletter.function()
handle_http = function.handle_http
