"""The dead-letter replay (http target: handle_http); its body is eco2.functions.replay."""

from eco2.functions import replay

function = replay.function()
handle_http = function.handle_http
