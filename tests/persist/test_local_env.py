"""`eco2 up` gives persist and the gateway one store: DATABASE_URL as set, else one SQLite file in the state dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from eco2.persist.connect import sqlite_path
from eco2_tools.local.runner import LocalPack, RunnerOptions
from tests.support import ROOT


def pack_env(tmp_path: Path) -> dict[str, str]:
    options = RunnerOptions.from_env(ROOT, {"ECO2_STATE_DIR": str(tmp_path / "state")})
    return LocalPack(options)._function_env()


def test_without_a_database_url_every_function_gets_the_state_dirs_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = pack_env(tmp_path)["DATABASE_URL"]
    assert sqlite_path(url) == (tmp_path / "state" / "eco2.sqlite3").resolve()


def test_a_database_url_in_the_environment_is_passed_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eco2")
    assert pack_env(tmp_path)["DATABASE_URL"] == "postgresql://postgres@127.0.0.1:5432/eco2"
