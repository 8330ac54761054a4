"""GET /api/v1/me/characters and /api/v1/me/scans read what persist wrote, to its owner only, on both stores."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from eco2.jobs import JobStore
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import bearer
from tests.persist.events import CATALOG_IDS, DEFAULT_ID, back, completed, deliver, granted

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


async def test_the_collection_and_the_history_show_what_was_granted_to_its_owner_only(
    persist_http: httpx.AsyncClient, make_gateway: MakeGateway, database_url: str, store: JobStore
) -> None:
    owner, other = "hist-owner", "hist-other"
    mine = [granted(owner, CATALOG_IDS[i], f"job-a{i}", completed_at=T0 + timedelta(minutes=i)) for i in range(3)]
    mine.append(completed(owner, "job-a3", "insufficient", completed_at=T0 + timedelta(minutes=3)))
    theirs = [granted(other, CATALOG_IDS[9], "job-b0", completed_at=T0)]
    for event in mine + theirs:
        await back(store, event)
    assert set(await asyncio.gather(*(deliver(persist_http, "/", e) for e in mine + theirs))) == {202}
    gateway = await make_gateway(DATABASE_URL=database_url)

    collection = await gateway.client.get("/api/v1/me/characters", headers=bearer(owner))
    assert collection.status_code == 200, collection.text
    body = collection.json()
    # The default character, granted by this first read (eco2.default_character), comes last: acquired now.
    assert body["count"] == 4
    assert [c["character_id"] for c in body["characters"]] == [*CATALOG_IDS[:3], DEFAULT_ID]
    assert body["characters"][1]["acquired_at"].startswith("2026-11-01T09:01:00")
    assert body["characters"][1]["job_id"] == "job-a1"
    others = (await gateway.client.get("/api/v1/me/characters", headers=bearer(other))).json()
    assert [c["character_id"] for c in others["characters"]] == [CATALOG_IDS[9], DEFAULT_ID]

    pages, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await gateway.client.get("/api/v1/me/scans", params=params, headers=bearer(owner))
        assert page.status_code == 200, page.text
        pages.append([s["job_id"] for s in page.json()["scans"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == [["job-a3", "job-a2", "job-a1"], ["job-a0"]]
    first = (await gateway.client.get("/api/v1/me/scans", headers=bearer(owner))).json()["scans"][0]
    assert (first["outcome"], first["category"], first["character_id"]) == ("insufficient", "일반쓰레기", None)
    nobody = (await gateway.client.get("/api/v1/me/scans", headers=bearer("nobody"))).json()
    assert nobody == {"scans": [], "next_cursor": None}


async def test_bad_requests_and_a_missing_database_get_clear_errors(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(DATABASE_URL="postgresql://postgres@127.0.0.1:1/x")
    assert (await gateway.client.get("/api/v1/me/characters")).status_code == 401
    for query, code in (("limit=0", "invalid_limit"), ("limit=abc", "invalid_limit"), ("cursor=%%%", "invalid_cursor")):
        response = await gateway.client.get(f"/api/v1/me/scans?{query}", headers=bearer("u"))
        assert (response.status_code, response.json()["error"]) == (400, code), query
    down = await gateway.client.get("/api/v1/me/characters", headers=bearer("u"))
    assert (down.status_code, down.json()["error"]) == (503, "database_unavailable")
    assert down.headers["retry-after"] == "1"
