"""catalog-sync (http target: handle_http); its body is eco2.functions.catalog_sync."""

from eco2.functions import catalog_sync

function = catalog_sync.function()
handle_http = function.handle_http
