"""Versioned migrations, applied at start: once, also when replicas (or persist and the gateway) start together."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from eco2.persist.connect import open_store, sqlite_path
from eco2.persist.store import MIGRATIONS, NO_TRANSACTION_MARK, migration_files, statements
from tests.persist.tables import count

# What operations.md tells an operator to write for a new index: its own migration, built without blocking writes.
CONCURRENT_INDEX = f"""{NO_TRANSACTION_MARK}
-- Rebuilt whole when a previous start stopped half-way (an interrupted CONCURRENTLY build leaves an invalid index).
DROP INDEX {{concurrently}} IF EXISTS reward_ledger_by_user;
CREATE INDEX {{concurrently}} reward_ledger_by_user ON reward_ledger (user_id, granted_at);
"""


def migrations_with(directory: Path, name: str, sql: str) -> Path:
    """The package's migrations and one more after them."""
    shutil.copytree(MIGRATIONS, directory)
    last = max(int(path.stem.partition("_")[0]) for path in directory.glob("*.sql"))
    (directory / f"{last + 1:04d}_{name}.sql").write_text(sql, encoding="utf-8")
    return directory


async def index_is_valid(database_url: str, index: str) -> bool:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(database_url)) as conn:
            return (
                conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)).fetchone()
                is not None
            )
    conn = await asyncpg.connect(database_url)
    try:
        valid = await conn.fetchval(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1", index
        )
        return bool(valid)
    finally:
        await conn.close()


async def test_replicas_starting_together_apply_each_migration_once(database_url: str) -> None:
    stores = await asyncio.gather(*(open_store(database_url) for _ in range(3)))
    try:
        again = await open_store(database_url)
        await again.aclose()
        versions = [migration.version for migration in migration_files(stores[0].dialect)]
        assert await count(database_url, "schema_migrations") == len(versions) >= 1
        assert await count(database_url, "reward_ledger") == 0
    finally:
        for store in stores:
            await store.aclose()


def test_both_dialects_get_the_same_tables_with_their_own_timestamp_type() -> None:
    postgres, sqlite = migration_files("postgres"), migration_files("sqlite")
    assert [m.version for m in postgres] == [m.version for m in sqlite]
    pg_sql, sqlite_sql = " ".join(statements(postgres[0].sql)), " ".join(statements(sqlite[0].sql))
    assert "timestamptz" in pg_sql
    assert "timestamptz" not in sqlite_sql
    assert "{timestamp}" not in pg_sql + sqlite_sql


def test_a_database_url_of_another_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        asyncio.run(open_store("mysql://x/y"))
    with pytest.raises(ValueError, match="sqlite:///"):
        sqlite_path("sqlite://relative")


async def test_a_migration_declared_outside_a_transaction_builds_its_index_concurrently(
    database_url: str, tmp_path: Path
) -> None:
    directory = migrations_with(tmp_path / "migrations", "ledger_by_user", CONCURRENT_INDEX)
    store = await open_store(database_url)
    try:
        migrations = migration_files(store.dialect, directory)
        assert migrations[-1].in_transaction is False
        assert ("CONCURRENTLY" in " ".join(statements(migrations[-1].sql))) == (store.dialect == "postgres")
        await store.migrate(migrations)
        await store.migrate(migrations)  # applied once
        assert await index_is_valid(database_url, "reward_ledger_by_user")
        assert await count(database_url, "schema_migrations") == len(migrations)
    finally:
        await store.aclose()


async def test_postgres_refuses_a_concurrent_index_in_a_migrations_transaction(tmp_path: Path) -> None:
    """Why the mark exists: without it the same migration stops the start (persist's and the gateway's)."""
    from tests.persist.conftest import PG_URL, reset_postgres

    await reset_postgres()
    in_transaction = CONCURRENT_INDEX.removeprefix(NO_TRANSACTION_MARK)
    directory = migrations_with(tmp_path / "migrations", "ledger_by_user", in_transaction)
    store = await open_store(PG_URL)
    try:
        with pytest.raises(asyncpg.ActiveSQLTransactionError, match="cannot run inside a transaction block"):
            await store.migrate(migration_files(store.dialect, directory))
        assert await count(PG_URL, "schema_migrations") == len(migration_files(store.dialect))
    finally:
        await store.aclose()
