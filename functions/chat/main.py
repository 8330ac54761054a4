"""The chat function (http target: handle_http); its body is eco2.functions.chat."""

from eco2.functions import chat

function = chat.function()
handle_http = function.handle_http
