"""blacklist-sync: eco2.auth.token.revoked -> blacklist key in Redis until the token expires (no reply)."""

from eco2.adapter import EventFunction
from eco2.cachesync.events import SyncEventType
from eco2.cachesync.sync_function import SyncResources, sync_function


def function() -> EventFunction[SyncResources]:
    return sync_function("blacklist-sync", SyncEventType.TOKEN_REVOKED)
