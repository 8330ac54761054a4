"""The catalog in use: an update published on the exchange is used by the next reward in every reward process;
a user's first scan that earns nothing grants the default character, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import from_http

from eco2.cachesync.events import CatalogUpdated, SyncEventType
from eco2.events import Classification, EventType, FinalAnswer, ScanAnswered, new_event
from eco2.jobs import JobStore
from eco2.rules import CharacterCatalog
from tests.cachesync.support import Exchanges, function_env, publish, start_fleet, stop_all
from tests.support import wait_for

CLEAR_PET = Classification(major_category="재활용폐기물", middle_category="무색페트병", minor_category="생수병")
GENERAL = Classification(major_category="일반쓰레기")


def answered(user: str, classification: Classification, rule_id: str | None) -> tuple[str, dict[str, Any]]:
    job_id = uuid.uuid4().hex
    data = ScanAnswered(
        job_id=job_id,
        user_id=user,
        image_url="http://x/y.png",
        classification=classification,
        rule_id=rule_id,
        final_answer=FinalAnswer(disposal_steps=("비우기",), user_answer="ok"),
    )
    headers, body = to_binary(new_event(EventType.SCAN_ANSWERED, data, source="/tests", job_id=job_id))
    return job_id, {"headers": dict(headers), "content": body}


async def reward(http: httpx.AsyncClient, url: str, store: JobStore, user: str, **scan: Any) -> dict[str, Any] | None:
    """One scan.answered through a reward process: the granted character, or None when nothing was granted."""
    job_id, request = answered(user, scan.get("classification", CLEAR_PET), scan.get("rule_id", "recyclable_clear_pet"))
    await store.create(job_id, user)
    answer = await http.post(url, **request)
    assert answer.status_code in (200, 202), answer.text
    if answer.status_code == 202:
        return None
    granted = from_http(dict(answer.headers), answer.content).get_data()
    assert isinstance(granted, dict)
    character: dict[str, Any] = granted["character"]
    return character


def updated_catalog(version: int, pet_character: str) -> CatalogUpdated:
    records = CharacterCatalog.load().as_records()
    for record in records:
        if record["middle_category"] == "무색페트병":
            record["character_id"], record["name"] = pet_character, f"새 캐릭터 {version}"
    return CatalogUpdated(version=version, characters=records)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_a_catalog_update_is_used_by_the_next_reward_in_every_process(
    store: JobStore, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    exchanges = Exchanges.fresh()
    fleet = await start_fleet("reward", 3, function_env(exchanges), child_log_dir)
    try:
        for child in fleet:
            character = await reward(http, child.url, store, f"before-{uuid.uuid4().hex[:6]}")
            assert character is not None
            assert character["character_id"] == "char_peti"
        await publish(exchanges.catalog, SyncEventType.CATALOG_UPDATED, updated_catalog(7, "char_new_peti"))
        for child in fleet:

            async def uses_the_update(url: str = child.url) -> bool:
                character = await reward(http, url, store, f"after-{uuid.uuid4().hex[:6]}")
                return character is not None and character["character_id"] == "char_new_peti"

            await wait_for(uses_the_update, timeout=2, what=f"{child.url} granting from catalog v7")
        # An older version published later changes nothing.
        await publish(exchanges.catalog, SyncEventType.CATALOG_UPDATED, updated_catalog(3, "char_old_peti"))
        await publish(exchanges.catalog, SyncEventType.CATALOG_UPDATED, updated_catalog(8, "char_v8"))
        for child in fleet:

            async def at_v8(url: str = child.url) -> bool:
                character = await reward(http, url, store, f"late-{uuid.uuid4().hex[:6]}")
                assert character is not None
                assert character["character_id"] != "char_old_peti"
                return bool(character["character_id"] == "char_v8")

            await wait_for(at_v8, timeout=2, what="v8, never v3")
    finally:
        stop_all(fleet)


async def test_the_first_scan_earning_nothing_grants_the_default_character_once(
    store: JobStore, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    fleet = await start_fleet("reward", 1, function_env(Exchanges.fresh()), child_log_dir)
    try:
        url, user = fleet[0].url, f"new-{uuid.uuid4().hex[:6]}"
        first = await reward(http, url, store, user, classification=GENERAL, rule_id=None)
        assert first is not None
        assert first["character_id"] == "char_eco"
        assert await reward(http, url, store, user, classification=GENERAL, rule_id=None) is None, "once"
        earned = await reward(http, url, store, user)
        assert earned is not None
        assert earned["character_id"] == "char_peti", "category characters still come"
    finally:
        stop_all(fleet)
