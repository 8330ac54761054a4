"""Counting rows straight from the database, without persist's own code."""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]

from eco2.persist.connect import sqlite_path

TABLES = ("reward_ledger", "user_characters", "scan_history", "schema_migrations")


async def reset_postgres(url: str) -> None:
    """Create the database `url` names when missing (through the `postgres` database), and drop persist's tables."""
    base, _, name = url.rpartition("/")
    admin = await asyncpg.connect(f"{base}/postgres", timeout=5)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(TABLES)}")
    finally:
        await conn.close()


async def count(database_url: str, table: str, where: str = "") -> int:
    query = f"SELECT count(*) FROM {table} {where}"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(database_url)) as conn:
            return int(conn.execute(query).fetchone()[0])
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()
