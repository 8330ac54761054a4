"""Counting rows straight from the database, without persist's own code."""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]

from eco2.persist.store import sqlite_path


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
