"""The answer stage (http target: handle_http); its body is eco2.functions.answer."""

from eco2.functions import answer

function = answer.function()
handle_http = function.handle_http
