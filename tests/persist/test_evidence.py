"""persist writes a final event only when Redis backs it: a forged grant (no job, another user's job, a character
outside the catalog, a claim of another job) is poison and writes nothing; a genuine one is written once, also when
replayed after its job hash expired."""

from __future__ import annotations

import uuid

import httpx
import redis.asyncio as aioredis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.cachesync.events import CatalogUpdated
from eco2.cachesync.store import store_catalog
from eco2.functions.persist import function
from eco2.jobs import JobStore
from eco2.rules import CharacterCatalog
from tests.persist.conftest import app_of
from tests.persist.events import CATALOG_IDS, back, completed, granted
from tests.persist.tables import count


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def refused(http: httpx.AsyncClient, event: CloudEvent) -> str:
    """The error code of a delivery persist refused as poison (fails the test on any other answer)."""
    headers, body = to_binary(event)
    response = await http.post("/", headers=headers, content=body)
    assert response.status_code == 422, response.text
    return str(response.json()["error"])


async def owned(database_url: str, user: str) -> int:
    return await count(database_url, "user_characters", f"WHERE user_id = '{user}'")


async def test_a_forged_grant_with_no_job_writes_nothing(persist_http: httpx.AsyncClient, database_url: str) -> None:
    bob = uid("bob")
    assert await refused(persist_http, granted(bob, "forged-legendary", uid("job"))) == "unbacked_event"
    # A character the catalog has changes nothing either: no job, no claim.
    assert await refused(persist_http, granted(bob, CATALOG_IDS[2], uid("job"))) == "unbacked_event"
    assert await owned(database_url, bob) == 0
    assert await count(database_url, "scan_history", f"WHERE user_id = '{bob}'") == 0


async def test_a_grant_naming_another_user_than_the_jobs_writes_nothing(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    alice, bob, job = uid("alice"), uid("bob"), uid("job")
    await back(store, granted(alice, CATALOG_IDS[3], job))
    assert await refused(persist_http, granted(bob, CATALOG_IDS[3], job)) == "unbacked_event"
    # Even with bob's own claim of that character (another scan of his): the job is still alice's.
    await back(store, granted(bob, CATALOG_IDS[3], uid("job")))
    forged = granted(bob, CATALOG_IDS[3], job)
    assert await refused(persist_http, forged) == "unbacked_event"
    assert await owned(database_url, bob) == 0


async def test_a_grant_the_claim_does_not_name_writes_nothing(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore, redis_client: aioredis.Redis
) -> None:
    user = uid("user")
    # A done job of the user's that granted nothing: no claim names it.
    job = uid("job")
    await back(store, completed(user, job))
    assert await refused(persist_http, granted(user, CATALOG_IDS[4], job)) == "unbacked_event"
    # The character was claimed, but by another job of the user's.
    await back(store, granted(user, CATALOG_IDS[5], uid("job")))
    assert await refused(persist_http, granted(user, CATALOG_IDS[5], job)) == "unbacked_event"
    # A reward id that is not the one of (user, character).
    other = uid("job")
    await back(store, granted(user, CATALOG_IDS[6], other))
    assert await refused(persist_http, granted(user, CATALOG_IDS[6], other, reward_id=str(uuid.uuid4()))) == (
        "unbacked_event"
    )
    # A character outside the catalog, though Redis holds a claim for it.
    outside = uid("job")
    await back(store, granted(user, "forged-legendary", outside))
    assert await redis_client.exists(keys.job(outside)) == 1
    assert await refused(persist_http, granted(user, "forged-legendary", outside)) == "unbacked_event"
    assert await owned(database_url, user) == 0


async def test_a_genuine_grant_is_written_once(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    user = uid("user")
    event = await back(store, granted(user, CATALOG_IDS[7], uid("job")))
    headers, body = to_binary(event)
    for _ in range(3):
        assert (await persist_http.post("/", headers=headers, content=body)).status_code == 202
    assert await owned(database_url, user) == 1
    assert await count(database_url, "reward_ledger", f"WHERE user_id = '{user}'") == 1


async def test_a_genuine_grant_replayed_after_its_job_expired_is_written_on_its_claim(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore, redis_client: aioredis.Redis
) -> None:
    user, job = uid("user"), uid("job")
    event = await back(store, granted(user, CATALOG_IDS[8], job))
    await redis_client.delete(keys.job(job))  # the job's TTL ran out; the claim (30 days) is still there
    headers, body = to_binary(event)
    assert (await persist_http.post("/", headers=headers, content=body)).status_code == 202
    assert await owned(database_url, user) == 1


async def test_a_history_row_needs_its_users_finished_job(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    alice, bob = uid("alice"), uid("bob")
    assert await refused(persist_http, completed(bob, uid("job"))) == "unbacked_event"
    alices = uid("job")
    await back(store, completed(alice, alices))
    assert await refused(persist_http, completed(bob, alices)) == "unbacked_event"
    running = uid("job")
    await store.create(running, bob)
    assert await refused(persist_http, completed(bob, running)) == "unbacked_event"
    assert await count(database_url, "scan_history", f"WHERE user_id = '{bob}'") == 0
    headers, body = to_binary(completed(alice, alices))
    assert (await persist_http.post("/", headers=headers, content=body)).status_code == 202
    assert await count(database_url, "scan_history", f"WHERE user_id = '{alice}'") == 1


async def test_a_character_of_a_newer_catalog_in_redis_is_known(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore, redis_client: aioredis.Redis
) -> None:
    # Version 2 hands one category's character to a newcomer.
    records = CharacterCatalog.load().as_records()
    renamed = next(i for i, r in enumerate(records) if r.get("middle_category"))
    records[renamed] = {**records[renamed], "character_id": "char_newcomer"}
    await store_catalog(redis_client, CatalogUpdated(version=2, characters=records))
    user = uid("user")
    event = await back(store, granted(user, "char_newcomer", uid("job")))
    headers, body = to_binary(event)
    # The first miss re-reads Redis's catalog at once (CATALOG_REFRESH_SECONDS only spaces later re-reads).
    assert (await persist_http.post("/", headers=headers, content=body)).status_code == 202
    assert await owned(database_url, user) == 1


async def test_a_redis_that_does_not_answer_is_transient_and_persist_is_not_ready(
    persist_env: dict[str, str], store: JobStore
) -> None:
    event = await back(store, granted(uid("user"), CATALOG_IDS[1], uid("job")))
    fn = function(persist_env)
    # Nothing listens on port 1: Redis down, the database up.
    await fn.start({"REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        transport = httpx.ASGITransport(app=app_of(fn))
        async with httpx.AsyncClient(transport=transport, base_url="http://persist") as http:
            assert (await http.get("/readyz")).status_code == 503
            headers, body = to_binary(event)
            response = await http.post("/", headers=headers, content=body)
            assert (response.status_code, response.json()["error"]) == (503, "store_unavailable")
    finally:
        await fn.stop()
