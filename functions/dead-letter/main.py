"""The dead-letter sink (http target: handle_http); its body is eco2.functions.dead_letter."""

from eco2.functions import dead_letter

function = dead_letter.function()
handle_http = function.handle_http
