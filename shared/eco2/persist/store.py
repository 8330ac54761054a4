"""The persist store: one interface over PostgreSQL (asyncpg) and SQLite (aiosqlite), chosen by DATABASE_URL.

Writes take a whole batch in one transaction; reads serve the gateway's collection and history. A store raises
`Refused` when the database rejects the data itself (a constraint, a bad value: the event is poison) and any
other exception when it cannot answer (the caller retries later).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from eco2.env import env_float, env_int
from eco2.persist.records import Record

DEFAULT_DATABASE_URL = "sqlite:///.eco2/eco2.sqlite3"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Refused(Exception):
    """The database refused the rows (constraint or data error): retrying cannot help."""


@dataclass(frozen=True, slots=True)
class OwnedCharacter:
    character_id: str
    name: str
    middle_category: str
    acquired_at: datetime
    job_id: str


@dataclass(frozen=True, slots=True)
class ScanEntry:
    job_id: str
    category: str | None
    middle_category: str | None
    rule_id: str | None
    outcome: str
    character_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Position:
    """Where a history page ended: the next page starts strictly after it (newest first)."""

    created_at: datetime
    job_id: str


class Store(Protocol):
    dialect: str

    async def write(self, records: list[Record]) -> None: ...

    async def characters(self, user_id: str) -> list[OwnedCharacter]: ...

    async def scans(self, user_id: str, after: Position | None, limit: int) -> list[ScanEntry]: ...

    async def migrate(self, migrations: Sequence[Migration] | None = None) -> None:
        """Apply the migrations not applied yet (by default the package's own), each once, in order."""

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PersistSettings:
    database_url: str = DEFAULT_DATABASE_URL
    # Group commit: a batch is written once it holds batch_rows events or its first one waited batch_ms.
    batch_rows: int = 500
    batch_ms: float = 5.0
    # PostgreSQL connections (and batches committing at once); SQLite has one writer whatever this says.
    pool_size: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PersistSettings:
        return cls(
            database_url=env.get("DATABASE_URL") or cls.database_url,
            batch_rows=env_int(env, "ECO2_PERSIST_BATCH_ROWS", cls.batch_rows, minimum=1),
            batch_ms=env_float(env, "ECO2_PERSIST_BATCH_MS", cls.batch_ms, minimum=0.0),
            pool_size=env_int(env, "ECO2_PERSIST_POOL_SIZE", cls.pool_size, minimum=1),
        )


# What differs between the dialects' schemas: how a timestamp is stored, and whether an index can be built
# without locking out writes (SQLite has no CONCURRENTLY; its index builds are short and local).
DIALECT_WORDS = {
    "postgres": {"timestamp": "timestamptz", "concurrently": "CONCURRENTLY"},
    "sqlite": {"timestamp": "text", "concurrently": ""},
}
# A migration whose first line is this runs statement by statement, each on its own, outside a transaction:
# PostgreSQL refuses `CREATE INDEX CONCURRENTLY` inside one.
NO_TRANSACTION_MARK = "-- eco2: no-transaction"


@dataclass(frozen=True, slots=True)
class Migration:
    """One file migrations/NNNN_name.sql, written out for a dialect."""

    version: int
    name: str
    sql: str
    # False: its statements are not wrapped in one transaction, so a failure half-way leaves the earlier ones
    # applied and the migration unrecorded; it runs again at the next start and must be written to (IF NOT EXISTS).
    in_transaction: bool = True


def migration_files(dialect: str, directory: Path = MIGRATIONS) -> list[Migration]:
    """The migrations of `directory` (NNNN_name.sql), in order, written out for `dialect`."""
    found = []
    words = DIALECT_WORDS[dialect]
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        text = path.read_text(encoding="utf-8")
        sql = text.replace("{timestamp}", words["timestamp"]).replace("{concurrently}", words["concurrently"])
        in_transaction = not text.lstrip().startswith(NO_TRANSACTION_MARK)
        found.append(Migration(int(number), name, sql, in_transaction))
    return found


def statements(sql: str) -> list[str]:
    """A migration's statements (one per `;`; migrations keep semicolons out of comments and literals)."""
    lines = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
