"""blacklist-sync (http target: handle_http); its body is eco2.functions.blacklist_sync."""

from eco2.functions import blacklist_sync

function = blacklist_sync.function()
handle_http = function.handle_http
