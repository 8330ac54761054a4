"""The vision stage (http target: handle_http); its body is eco2.functions.vision."""

from eco2.functions import vision

function = vision.function()
handle_http = function.handle_http
