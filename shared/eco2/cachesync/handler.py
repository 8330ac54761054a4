"""The one handler every cache-sync consumer shares: an event's data checked, then applied to a target.

The functions (blacklist-sync, catalog-sync) apply it to Redis, the durable truth; every replica applies the
same decoded event to its in-process caches. The rules live here once: a revocation lasts until the token
would expire (a user's, until the last token issued before it would; a later cut-off wins); a catalog replaces
an older version only, never a newer one; applying twice changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from pydantic import ValidationError

from eco2.cachesync.events import CatalogUpdated, SyncEventType, TokenRevoked
from eco2.errors import PoisonEvent
from eco2.rules import CharacterCatalog, RuleDataError

SyncEvent = TokenRevoked | CatalogUpdated
_MODELS: dict[str, type[TokenRevoked] | type[CatalogUpdated]] = {
    SyncEventType.TOKEN_REVOKED: TokenRevoked,
    SyncEventType.CATALOG_UPDATED: CatalogUpdated,
}


def decode(event_type: str, data: dict[str, Any]) -> SyncEvent:
    """The event's data as its model; unknown types and bad data are poison (422, never retried)."""
    model = _MODELS.get(event_type)
    if model is None:
        raise PoisonEvent("unknown_type", f"{event_type!r} is not a cache-sync event type")
    try:
        event = model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "data" for err in exc.errors()[:5])
        raise PoisonEvent("invalid_data", f"event data failed validation at: {fields}") from None
    if isinstance(event, CatalogUpdated):
        catalog_of(event)
    return event


def catalog_of(event: CatalogUpdated) -> CharacterCatalog:
    try:
        return CharacterCatalog.from_records(event.characters)
    except RuleDataError as exc:
        raise PoisonEvent("invalid_catalog", str(exc)[:300]) from None


class RevokedTokens:
    """jti -> when the token expires; an entry leaves once its token would have expired."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, jti: str, expires_at: float) -> None:
        # Plain dict writes: the consumer and the requests share one event loop (and the GIL): no lock needed.
        if expires_at > self._until.get(jti, 0.0):
            self._until[jti] = expires_at

    def merge(self, entries: Iterable[tuple[str, float]]) -> None:
        for jti, expires_at in entries:
            self.add(jti, expires_at)

    def contains(self, jti: str, now: float | None = None) -> bool:
        until = self._until.get(jti)
        if until is None:
            return False
        if until > (time.time() if now is None else now):
            return True
        self._until.pop(jti, None)
        return False

    def purge(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        gone = [jti for jti, until in list(self._until.items()) if until <= now]
        for jti in gone:
            self._until.pop(jti, None)
        return len(gone)


class RevokedUsers:
    """user -> (tokens issued at or before this are refused, until when); an entry leaves once it expires."""

    def __init__(self) -> None:
        self._cut: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._cut)

    def add(self, user_id: str, issued_before: float, expires_at: float) -> None:
        held = self._cut.get(user_id)
        if held is None or issued_before > held[0]:
            self._cut[user_id] = (issued_before, max(expires_at, held[1] if held else 0.0))

    def merge(self, entries: Iterable[tuple[str, float, float]]) -> None:
        for user_id, issued_before, expires_at in entries:
            self.add(user_id, issued_before, expires_at)

    def refuses(self, user_id: str, issued_at: float, now: float | None = None) -> bool:
        held = self._cut.get(user_id)
        if held is None:
            return False
        if held[1] <= (time.time() if now is None else now):
            self._cut.pop(user_id, None)
            return False
        return issued_at <= held[0]

    def purge(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        gone = [user for user, (_, until) in list(self._cut.items()) if until <= now]
        for user in gone:
            self._cut.pop(user, None)
        return len(gone)


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    version: int
    catalog: CharacterCatalog


class CatalogCache:
    """The current character catalog: the package's file (version 0) until a newer version arrives."""

    def __init__(self, initial: CharacterCatalog | None = None) -> None:
        self._current = CatalogVersion(0, initial if initial is not None else CharacterCatalog.load())
        self._lock = Lock()

    @property
    def current(self) -> CharacterCatalog:
        return self._current.catalog

    @property
    def version(self) -> int:
        return self._current.version

    def offer(self, version: int, catalog: CharacterCatalog) -> bool:
        """Take `catalog` if it is newer than the one held; an older or equal version changes nothing."""
        with self._lock:
            if version <= self._current.version:
                return False
            self._current = CatalogVersion(version, catalog)
            return True


@dataclass
class LocalCaches:
    """A replica's in-process copies, fed by the consumer and read on every request."""

    revoked: RevokedTokens
    catalog: CatalogCache
    revoked_users: RevokedUsers = field(default_factory=RevokedUsers)

    def apply(self, event: SyncEvent) -> None:
        if isinstance(event, TokenRevoked):
            if event.jti is not None:
                self.revoked.add(event.jti, event.expires_at)
            elif event.issued_before is not None:
                self.revoked_users.add(event.user_id, event.issued_before, event.expires_at)
        else:
            self.catalog.offer(event.version, catalog_of(event))
