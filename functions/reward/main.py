"""The reward stage (http target: handle_http); its body is eco2.functions.reward."""

from eco2.functions import reward

function = reward.function()
handle_http = function.handle_http
