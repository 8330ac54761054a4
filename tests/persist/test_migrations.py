"""Versioned migrations, applied at start: once, also when replicas (or persist and the gateway) start together."""

from __future__ import annotations

import asyncio

import pytest

from eco2.persist.connect import open_store, sqlite_path
from eco2.persist.store import migration_files, statements
from tests.persist.tables import count


async def test_replicas_starting_together_apply_each_migration_once(database_url: str) -> None:
    stores = await asyncio.gather(*(open_store(database_url) for _ in range(3)))
    try:
        again = await open_store(database_url)
        await again.aclose()
        versions = [version for version, _, _ in migration_files(stores[0].dialect)]
        assert await count(database_url, "schema_migrations") == len(versions) >= 1
        assert await count(database_url, "reward_ledger") == 0
    finally:
        for store in stores:
            await store.aclose()


def test_both_dialects_get_the_same_tables_with_their_own_timestamp_type() -> None:
    postgres, sqlite = migration_files("postgres"), migration_files("sqlite")
    assert [v for v, _, _ in postgres] == [v for v, _, _ in sqlite]
    pg_sql, sqlite_sql = " ".join(statements(postgres[0][2])), " ".join(statements(sqlite[0][2]))
    assert "timestamptz" in pg_sql
    assert "timestamptz" not in sqlite_sql
    assert "{timestamp}" not in pg_sql + sqlite_sql


def test_a_database_url_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        asyncio.run(open_store("mysql://x/y"))
    with pytest.raises(ValueError, match="sqlite:///"):
        sqlite_path("sqlite://relative")
