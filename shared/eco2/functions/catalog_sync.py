"""catalog-sync: eco2.character.catalog.updated -> the catalog in Redis, a newer version only (no reply)."""

from eco2.adapter import EventFunction
from eco2.cachesync.events import SyncEventType
from eco2.cachesync.sync_function import SyncResources, sync_function


def function() -> EventFunction[SyncResources]:
    return sync_function("catalog-sync", SyncEventType.CATALOG_UPDATED)
