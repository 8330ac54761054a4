"""The store DATABASE_URL names, connected and migrated: PostgreSQL (asyncpg) or SQLite (aiosqlite).

Apart from eco2.persist.store (the interface and the rows both dialects share), so that the dialects import the
interface and only this module imports the dialects.
"""

from __future__ import annotations

from pathlib import Path

from eco2.persist.store import Store


async def open_store(url: str, pool_size: int = 4) -> Store:
    """Connect (and migrate) the store DATABASE_URL names: postgresql://… or sqlite:///relative | ////absolute."""
    if url.startswith(("postgresql://", "postgres://")):
        from eco2.persist.postgres import PostgresStore

        return await PostgresStore.open(url, pool_size)
    if url.startswith("sqlite://"):
        from eco2.persist.sqlite import SqliteStore

        return await SqliteStore.open(sqlite_path(url))
    raise ValueError("DATABASE_URL must start with postgresql:// or sqlite:///")


def sqlite_path(url: str) -> Path:
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or len(rest) < 2:
        raise ValueError("a SQLite DATABASE_URL is sqlite:///relative/path or sqlite:////absolute/path")
    return Path(rest[1:])
