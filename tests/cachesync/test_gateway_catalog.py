"""GET /api/v1/characters: the gateway's in-process catalog, current from the catalog exchange."""

from __future__ import annotations

import httpx

from eco2.cachesync.events import CatalogUpdated, SyncEventType
from eco2.rules import CharacterCatalog
from tests.cachesync.support import publish
from tests.gateway.conftest import BLACKLIST_EXCHANGE, MakeGateway, make_gateway, session_sink, sink  # noqa: F401
from tests.support import wait_for


async def test_the_catalog_is_listed_and_an_update_is_live_without_a_restart(make_gateway: MakeGateway) -> None:  # noqa: F811
    gateway = await make_gateway()
    listed = (await gateway.client.get("/api/v1/characters")).json()
    assert listed["version"] == 0
    assert listed["characters"][0]["is_default"] is True
    assert len(listed["characters"]) == len(CharacterCatalog.load().all())
    await wait_for(lambda: _live(gateway.context.caches.live), timeout=10, what="consuming")
    records = CharacterCatalog.load().as_records()
    records[1] = {**records[1], "character_id": "char_brand_new", "name": "새 캐릭터"}  # a new one for a category
    await publish(
        f"{BLACKLIST_EXCHANGE}.catalog", SyncEventType.CATALOG_UPDATED, CatalogUpdated(version=9, characters=records)
    )

    async def updated() -> httpx.Response | None:
        answer = await gateway.client.get("/api/v1/characters")
        return answer if answer.json()["version"] == 9 else None

    answer = await wait_for(updated, timeout=2, what="version 9 listed")
    assert "char_brand_new" in {c["character_id"] for c in answer.json()["characters"]}


async def _live(value: bool) -> bool:
    return value
