"""The persist function (http target: handle_http); its body is eco2.functions.persist."""

from eco2.functions import persist

function = persist.function()
handle_http = function.handle_http
