"""Building a process's caches and their consumer: what the gateway, authz and reward each start once."""

from __future__ import annotations

from collections.abc import Mapping

from eco2.cachesync.events import SyncEventType
from eco2.cachesync.handler import CatalogCache, LocalCaches, RevokedTokens
from eco2.cachesync.replica import CacheSync, SyncSettings

BLACKLIST = frozenset({SyncEventType.TOKEN_REVOKED})
CATALOG = frozenset({SyncEventType.CATALOG_UPDATED})
BOTH = BLACKLIST | CATALOG


def start_sync(env: Mapping[str, str], redis_url: str, kinds: frozenset[SyncEventType], *, name: str) -> CacheSync:
    """A started consumer over fresh caches (the catalog begins as the package's file, version 0)."""
    caches = LocalCaches(RevokedTokens(), CatalogCache())
    sync = CacheSync(SyncSettings.from_env(env, redis_url), caches, kinds, name=name)
    sync.start()
    return sync
