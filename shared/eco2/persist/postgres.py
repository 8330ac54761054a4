"""The persist store on PostgreSQL (asyncpg): a batch is three `INSERT … SELECT unnest(…)` statements, one commit.

asyncpg over psycopg 3, measured on this machine (PostgreSQL 15, one connection, 4 text columns): 200-row
`unnest` inserts 88–98k rows/s vs 73–76k; one row per transaction 1.8–2.3k rows/s vs 1.7k (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type hints

from eco2.connections import ConnectionSettings
from eco2.persist.records import Grant, History, Record, merge
from eco2.persist.store import (
    Migration,
    OwnedCharacter,
    Position,
    Refused,
    ScanEntry,
    migration_files,
    statements,
)

_LEDGER = """
INSERT INTO reward_ledger (reward_id, user_id, character_id, job_id, granted_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
ON CONFLICT DO NOTHING"""
_CHARACTERS = """
INSERT INTO user_characters (user_id, character_id, name, middle_category, job_id, reward_id, acquired_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
ON CONFLICT DO NOTHING"""
# A replay changes nothing; the one update: a granted row replaces an `already_owned` one of the same job
# (the same job's redelivery can race its own grant).
_HISTORY = """
INSERT INTO scan_history (job_id, user_id, category, middle_category, rule_id, outcome, character_id, reward_id,
  created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
  $9::timestamptz[])
ON CONFLICT (job_id) DO UPDATE SET outcome = excluded.outcome, character_id = excluded.character_id,
  reward_id = excluded.reward_id
WHERE excluded.outcome = 'granted' AND scan_history.outcome <> 'granted'"""
_CHARACTERS_OF = """
SELECT character_id, name, middle_category, acquired_at, job_id FROM user_characters
WHERE user_id = $1 ORDER BY acquired_at, character_id"""
_SCANS_OF = """
SELECT job_id, category, middle_category, rule_id, outcome, character_id, created_at FROM scan_history
WHERE user_id = $1 AND ($2::timestamptz IS NULL OR (created_at, job_id) < ($2::timestamptz, $3::text))
ORDER BY created_at DESC, job_id DESC LIMIT $4"""
# Replicas starting together migrate one at a time.
_MIGRATION_LOCK = 0x6563_6F32_7065_7273
# Beyond the 10 s of every other statement: an index built CONCURRENTLY scans the whole table (twice). A longer
# build is run by hand before the release (docs/operations.md, Database migrations).
MIGRATION_STATEMENT_TIMEOUT_SECONDS = 300.0


def columns(rows: list[Any]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)]


def grant_rows(grants: list[Grant]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    ledger = [(g.reward_id, g.user_id, g.character_id, g.job_id, g.at) for g in grants]
    owned = [(g.user_id, g.character_id, g.name, g.middle_category, g.job_id, g.reward_id, g.at) for g in grants]
    return ledger, owned


def history_rows(histories: list[History]) -> list[tuple[Any, ...]]:
    return [
        (h.job_id, h.user_id, h.category, h.middle_category, h.rule_id, h.outcome, h.character_id, h.reward_id, h.at)
        for h in histories
    ]


async def _apply(conn: asyncpg.Connection, migration: Migration) -> None:
    """One migration's statements and its row in schema_migrations: in one transaction, or (declared so) each
    statement on its own and the row last, so an interrupted one is applied again in full at the next start."""
    record = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
    if not migration.in_transaction:
        for statement in statements(migration.sql):
            await conn.execute(statement, timeout=MIGRATION_STATEMENT_TIMEOUT_SECONDS)
        await conn.execute(record, migration.version, migration.name)
        return
    async with conn.transaction():
        for statement in statements(migration.sql):
            await conn.execute(statement, timeout=MIGRATION_STATEMENT_TIMEOUT_SECONDS)
        await conn.execute(record, migration.version, migration.name)


class PostgresStore:
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, pool_size: int) -> PostgresStore:
        # The connect (timeout) and every statement (command_timeout) are bounded: a stalled server is not waited on.
        connect_limit = ConnectionSettings.from_env().db_connect_timeout_seconds
        pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size, command_timeout=10, timeout=connect_limit)
        store = cls(pool)
        await store.migrate()
        return store

    async def migrate(self, migrations: Sequence[Migration] | None = None) -> None:
        pending = migration_files(self.dialect) if migrations is None else migrations
        async with self._pool.acquire() as conn:
            # A session's lock, not a transaction's: a migration declared outside a transaction runs under it too.
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
                for migration in pending:
                    if migration.version not in applied:
                        await _apply(conn, migration)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    async def write(self, records: list[Record]) -> None:
        grants, histories = merge(records)
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if grants:
                    ledger, owned = grant_rows(grants)
                    await conn.execute(_LEDGER, *columns(ledger))
                    await conn.execute(_CHARACTERS, *columns(owned))
                if histories:
                    await conn.execute(_HISTORY, *columns(history_rows(histories)))
        except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as exc:
            raise Refused(type(exc).__name__) from exc

    async def characters(self, user_id: str) -> list[OwnedCharacter]:
        rows = await self._pool.fetch(_CHARACTERS_OF, user_id)
        return [OwnedCharacter(**dict(row)) for row in rows]

    async def scans(self, user_id: str, after: Position | None, limit: int) -> list[ScanEntry]:
        at: datetime | None = after.created_at if after else None
        rows = await self._pool.fetch(_SCANS_OF, user_id, at, after.job_id if after else None, limit)
        return [ScanEntry(**dict(row)) for row in rows]

    async def ping(self) -> bool:
        try:
            return bool(await self._pool.fetchval("SELECT 1", timeout=2))
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._pool.close()
