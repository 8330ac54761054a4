"""The persist function as a standalone CloudEvents function (functions-framework http target: handle_http)."""

from eco2.persist.function import function as persist_function

function = persist_function()
handle_http = function.handle_http
