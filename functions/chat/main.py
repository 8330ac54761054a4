"""The chat function as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2 import chat

function = chat.function()
handle_http = function.handle_http
