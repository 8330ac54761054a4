"""The reward stage as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import stages

function = stages.function("reward")
handle_http = function.handle_http
