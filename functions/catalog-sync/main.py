"""catalog-sync: eco2.character.catalog.updated -> the catalog in Redis, a newer version only (no reply)."""

from eco2.cachesync.events import SyncEventType
from eco2.cachesync.functions import function as sync_function

function = sync_function("catalog-sync", SyncEventType.CATALOG_UPDATED)
handle_http = function.handle_http
