"""The caller's rewards and scan history: GET /api/v1/me/characters and GET /api/v1/me/scans.

Read from the store the persist function writes (DATABASE_URL: PostgreSQL, or the SQLite file `eco2 up` shares
between the two), opened on first use so a gateway without a database still serves everything else. Scoped to
the token's user; the history is paged by an opaque cursor (the last entry's finish time and job id). A
collection without the catalog's default character gets it granted there and then (eco2.default_character).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eco2 import default_character
from eco2.errors import BadRequest, StoreUnavailable
from eco2.gateway import models
from eco2.gateway.context import GatewayContext
from eco2.persist.connect import open_store
from eco2.persist.records import Grant, Record
from eco2.persist.store import OwnedCharacter, PersistSettings, Position, Store

DEFAULT_PAGE = 20
MAX_PAGE = 100
T = TypeVar("T")


class History:
    def __init__(self, ctx: GatewayContext, env: Mapping[str, str]) -> None:
        self.ctx = ctx
        self._settings = PersistSettings.from_env(env)
        self._store: Store | None = None
        self._opening = asyncio.Lock()

    async def characters(self, request: Request) -> Response:
        principal = await self.ctx.auth.authenticate(request)
        owned = await self._read(lambda store: store.characters(principal.user_id))
        default = self.ctx.caches.caches.catalog.current.default()
        if all(character.character_id != default.character_id for character in owned):
            grant = await default_character.first_sight(principal.user_id, default, self.ctx.store.redis)
            owned = await self._read(lambda store: _granted(store, grant))
        body = models.CharacterCollection(
            characters=[models.OwnedCharacter.model_validate(c, from_attributes=True) for c in owned],
            count=len(owned),
        )
        return JSONResponse(body.model_dump(mode="json"))

    async def scans(self, request: Request) -> Response:
        principal = await self.ctx.auth.authenticate(request)
        limit = page_size(request.query_params.get("limit"))
        after = decode_cursor(request.query_params.get("cursor"))
        rows = await self._read(lambda store: store.scans(principal.user_id, after, limit + 1))
        page = rows[:limit]
        more = len(rows) > limit
        body = models.ScanHistoryPage(
            scans=[models.ScanHistoryEntry.model_validate(r, from_attributes=True) for r in page],
            next_cursor=encode_cursor(Position(page[-1].created_at, page[-1].job_id)) if more else None,
        )
        return JSONResponse(body.model_dump(mode="json"))

    async def _read(self, query: Callable[[Store], Awaitable[T]]) -> T:
        store = await self._open()
        try:
            return await query(store)
        except Exception:
            raise _unavailable() from None

    async def _open(self) -> Store:
        async with self._opening:
            if self._store is None:
                try:
                    self._store = await open_store(self._settings.database_url, self._settings.pool_size)
                except Exception:
                    raise _unavailable() from None
            return self._store

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()
            self._store = None


async def _granted(store: Store, grant: Grant) -> list[OwnedCharacter]:
    """The collection after writing `grant` (a no-op if a concurrent request or persist wrote it first)."""
    await store.write([Record(grant, None)])
    return await store.characters(grant.user_id)


def _unavailable() -> StoreUnavailable:
    return StoreUnavailable("database_unavailable", "the rewards database is unreachable", headers={"Retry-After": "1"})


def page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequest("invalid_limit", f"limit must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def encode_cursor(position: Position) -> str:
    raw = json.dumps([position.created_at.isoformat(), position.job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str | None) -> Position | None:
    if raw is None:
        return None
    try:
        at, job_id = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        created = datetime.fromisoformat(at)
        if not isinstance(job_id, str) or created.tzinfo is None:
            raise ValueError("bad cursor")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("invalid_cursor", "cursor is not one this API returned") from None
    return Position(created, job_id)
