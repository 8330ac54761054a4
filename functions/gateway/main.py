"""The gateway, the only thing mobile clients talk to (functions-framework http target: handle_http)."""

from eco2.gateway.function import GatewayFunction

function = GatewayFunction()
handle_http = function.handle_http
