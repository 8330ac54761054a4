"""The operator's commands in docs/operations.md and docs/deploy.md, run here where a machine without a cluster
can: every `eco2` command exists, every directory they apply renders, and the backups restore."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

from eco2.persist.connect import open_store
from eco2_tools.manifests.kustomize import render
from tests.persist import tables
from tests.support import REDIS_TEST_URL, ROOT

DOCS = (ROOT / "docs" / "operations.md", ROOT / "docs" / "deploy.md")
SHELL_BLOCK = re.compile(r"```(?:sh|bash)\n(.*?)```", re.S)
# `eco2 CMD [SUB]` as a command (not `-n eco2 get`); SUB only when it is a word, not an option or an argument.
ECO2_COMMAND = re.compile(r"(?:^|[\s/])(?<!-n )eco2 ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")
APPLIED_DIRECTORY = re.compile(r"kubectl (?:kustomize|apply -k|delete -k) (\S+)")
PG_URL = os.environ.get("ECO2_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eco2_persist_test")
# Commands that take a positional argument after them, not a subcommand.
TAKES_AN_ARGUMENT = {"serve"}


def _shell_lines() -> list[str]:
    lines = []
    for doc in DOCS:
        for block in SHELL_BLOCK.findall(doc.read_text(encoding="utf-8")):
            lines += [line.partition(" #")[0] for line in block.splitlines() if not line.lstrip().startswith("#")]
    return lines


def _eco2_commands() -> list[tuple[str, ...]]:
    found = set()
    for line in _shell_lines():
        for match in ECO2_COMMAND.finditer(line):
            command, sub = match.groups()
            found.add((command,) if sub is None or command in TAKES_AN_ARGUMENT else (command, sub))
    return sorted(found)


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed")
        pytest.skip(f"{program} is not installed")
    return path


def test_the_docs_name_the_operators_commands() -> None:
    commands = {c[0] for c in _eco2_commands()}
    assert {"dlq", "up", "status", "down"} <= commands
    assert {"deploy/overlays/prod", "deploy/monitoring"} <= {
        m for line in _shell_lines() for m in APPLIED_DIRECTORY.findall(line)
    }


@pytest.mark.parametrize("command", _eco2_commands(), ids=" ".join)
def test_every_eco2_command_in_the_docs_exists(command: tuple[str, ...]) -> None:
    eco2 = Path(sys.executable).parent / "eco2"
    done = subprocess.run([str(eco2), *command, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_every_directory_the_docs_apply_renders() -> None:
    _need("kubectl")
    directories = {m for line in _shell_lines() for m in APPLIED_DIRECTORY.findall(line)}
    for directory in sorted(directories):
        assert render(ROOT / directory).strip(), directory


async def test_the_documented_postgres_backup_restores_the_rewards(tmp_path: Path) -> None:
    pg_dump, pg_restore = _need("pg_dump"), _need("pg_restore")
    await tables.reset_postgres(PG_URL)
    store = await open_store(PG_URL)
    await store.aclose()
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(
            "INSERT INTO reward_ledger VALUES ('r-1', 'u-1', 'c-1', 'j-1', now()), ('r-2', 'u-1', 'c-2', 'j-2', now())"
        )
    finally:
        await conn.close()
    dump = tmp_path / "eco2.dump"
    # Back up and restore, as operations.md says.
    subprocess.run([pg_dump, "--format=custom", "--no-owner", f"--file={dump}", PG_URL], check=True, timeout=60)
    restored = f"{PG_URL}_restored"
    await tables.reset_postgres(restored)
    restore = [pg_restore, "--no-owner", "--exit-on-error", f"--dbname={restored}", str(dump)]
    subprocess.run(restore, check=True, timeout=60)
    assert await tables.count(restored, "reward_ledger") == 2
    again = await open_store(restored)  # persist starting on the restored database finds its migrations applied
    await again.aclose()
    assert await tables.count(restored, "schema_migrations") == await tables.count(PG_URL, "schema_migrations")


def test_the_documented_redis_snapshot_is_taken(tmp_path: Path) -> None:
    redis_cli = _need("redis-cli")
    snapshot = tmp_path / "eco2-redis.rdb"
    command = [redis_cli, "-u", REDIS_TEST_URL, "--rdb", str(snapshot)]
    subprocess.run(command, check=True, timeout=60, capture_output=True)
    assert snapshot.read_bytes()[:5] == b"REDIS"
