"""The pack's Redis scripts: one `<name>.lua` file per script beside this module, read once per process."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

SCRIPTS = Path(__file__).resolve().parent


@cache
def source(name: str) -> str:
    """The text of `<name>.lua` (cached: every client of a process registers the same text)."""
    return (SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


def register(client: aioredis.Redis, name: str) -> AsyncScript:
    """`<name>.lua` registered on `client`: EVALSHA, loading it once if the server does not know it yet."""
    return client.register_script(source(name))
