"""blacklist-sync: eco2.auth.token.revoked -> blacklist key in Redis until the token expires (no reply)."""

from eco2.cachesync.events import SyncEventType
from eco2.cachesync.functions import function as sync_function

function = sync_function("blacklist-sync", SyncEventType.TOKEN_REVOKED)
handle_http = function.handle_http
