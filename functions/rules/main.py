"""The rules stage (http target: handle_http); its body is eco2.functions.rules."""

from eco2.functions import rules

function = rules.function()
handle_http = function.handle_http
