"""The persist store on SQLite (aiosqlite), the embedded default: one file the persist function writes and the
gateway reads (WAL: readers never wait for the writer). A batch is one `BEGIN IMMEDIATE … COMMIT`."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from eco2.persist.postgres import grant_rows, history_rows
from eco2.persist.records import Record, merge
from eco2.persist.store import (
    Migration,
    OwnedCharacter,
    Position,
    Refused,
    ScanEntry,
    migration_files,
    statements,
)

BUSY_TIMEOUT_SECONDS = 5.0
_LEDGER = "INSERT INTO reward_ledger VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_CHARACTERS = "INSERT INTO user_characters VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_HISTORY = """
INSERT INTO scan_history (job_id, user_id, category, middle_category, rule_id, outcome, character_id, reward_id,
  created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id) DO UPDATE SET outcome = excluded.outcome, character_id = excluded.character_id,
  reward_id = excluded.reward_id
WHERE excluded.outcome = 'granted' AND scan_history.outcome <> 'granted'"""
_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES (?, ?)"
_CHARACTERS_OF = """
SELECT character_id, name, middle_category, acquired_at, job_id FROM user_characters
WHERE user_id = ? ORDER BY acquired_at, character_id"""
_SCANS_OF = """
SELECT job_id, category, middle_category, rule_id, outcome, character_id, created_at FROM scan_history
WHERE user_id = ? AND (? IS NULL OR (created_at, job_id) < (?, ?))
ORDER BY created_at DESC, job_id DESC LIMIT ?"""


async def _while_busy(conn: aiosqlite.Connection, statement: str) -> None:
    """Run `statement`, retried for as long as the busy timeout: in WAL mode SQLite answers `database is locked`
    at once (no busy wait) while another connection opens the same new file, or recovers or resets its WAL (the
    gateway's first-sight grant and persist's batch: two processes writing one file)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            await conn.execute(statement)
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


def iso(at: datetime) -> str:
    """Fixed-width UTC text: compares as the instants do."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def as_text(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(iso(value) if isinstance(value, datetime) else value for value in row) for row in rows]


class SqliteStore:
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()  # one connection: one transaction at a time

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
        await _while_busy(conn, "PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")  # a 2xx means durable, on SQLite too
        store = cls(conn)
        await store.migrate()
        return store

    async def migrate(self, migrations: Sequence[Migration] | None = None) -> None:
        # One transaction for all: SQLite builds an index inside one, and has no CONCURRENTLY to refuse.
        pending = migration_files(self.dialect) if migrations is None else migrations
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                await self._conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                )
                async with self._conn.execute("SELECT version FROM schema_migrations") as cursor:
                    applied = {row[0] for row in await cursor.fetchall()}
                for migration in pending:
                    if migration.version not in applied:
                        for statement in statements(migration.sql):
                            await self._conn.execute(statement)
                        await self._conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                            (migration.version, migration.name),
                        )
                await self._conn.execute("COMMIT")
            except BaseException:
                await self._rollback()
                raise

    async def write(self, records: list[Record]) -> None:
        grants, histories = merge(records)
        ledger, owned = grant_rows(grants)
        async with self._lock:
            await _while_busy(self._conn, "BEGIN IMMEDIATE")
            try:
                await self._conn.executemany(_LEDGER, as_text(ledger))
                await self._conn.executemany(_CHARACTERS, as_text(owned))
                await self._conn.executemany(_HISTORY, as_text(history_rows(histories)))
                await self._conn.execute("COMMIT")
            except BaseException as exc:
                await self._rollback()
                if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                    raise Refused(type(exc).__name__) from exc
                raise

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error, ValueError):  # no transaction left, or a closed connection
            await self._conn.execute("ROLLBACK")

    async def characters(self, user_id: str) -> list[OwnedCharacter]:
        async with self._conn.execute(_CHARACTERS_OF, (user_id,)) as cursor:
            rows = await cursor.fetchall()
        return [OwnedCharacter(r[0], r[1], r[2], instant(r[3]), r[4]) for r in rows]

    async def scans(self, user_id: str, after: Position | None, limit: int) -> list[ScanEntry]:
        at = iso(after.created_at) if after else None
        params = (user_id, at, at, after.job_id if after else None, limit)
        async with self._conn.execute(_SCANS_OF, params) as cursor:
            rows = await cursor.fetchall()
        return [ScanEntry(r[0], r[1], r[2], r[3], r[4], r[5], instant(r[6])) for r in rows]

    async def ping(self) -> bool:
        try:
            async with self._conn.execute("SELECT 1") as cursor:
                return (await cursor.fetchone()) is not None
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._conn.close()
