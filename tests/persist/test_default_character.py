"""The default character on first sight: a brand-new user's first GET /api/v1/me/characters shows it, granted
once however many first requests race, persisted like any reward (ledger + collection), on both stores."""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from eco2 import default_character, keys
from eco2.jobs import JobStore
from eco2.rewards import reward_id
from eco2.rules import CharacterCatalog
from tests.gateway.conftest import MakeGateway
from tests.gateway.support import bearer
from tests.persist import tables
from tests.persist.events import back, deliver, granted

DEFAULT = CharacterCatalog.load().default()


async def test_a_brand_new_users_first_read_shows_the_default_character(
    make_gateway: MakeGateway, database_url: str, redis_client: aioredis.Redis
) -> None:
    gateway = await make_gateway(DATABASE_URL=database_url)
    first = await gateway.client.get("/api/v1/me/characters", headers=bearer("newcomer"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["count"] == 1
    (owned,) = body["characters"]
    assert (owned["character_id"], owned["name"]) == (DEFAULT.character_id, DEFAULT.name)
    assert owned["job_id"] == "first-sight"
    again = (await gateway.client.get("/api/v1/me/characters", headers=bearer("newcomer"))).json()
    assert again == body, "granted once: the second read shows the same grant"
    where = f"WHERE user_id = 'newcomer' AND reward_id = '{reward_id('newcomer', DEFAULT.character_id)}'"
    assert await tables.count(database_url, "reward_ledger", where) == 1, "in the ledger, as any reward"
    assert await tables.count(database_url, "scan_history", "WHERE user_id = 'newcomer'") == 0, "no scan made up"
    # The reward step's own check: a first scan earning nothing will not grant it again.
    catalog = CharacterCatalog.load()
    assert await default_character.still_missing("newcomer", catalog, redis_client, reward_id) is None


async def test_two_concurrent_first_requests_grant_it_once(
    make_gateway: MakeGateway, database_url: str, redis_client: aioredis.Redis
) -> None:
    gateways = [await make_gateway(DATABASE_URL=database_url) for _ in range(2)]  # two replicas, one store
    users = [f"racer-{i}" for i in range(10)]

    async def first_reads(user: str) -> list[httpx.Response]:
        reads = (g.client.get("/api/v1/me/characters", headers=bearer(user)) for g in gateways for _ in range(2))
        return list(await asyncio.gather(*reads))

    for answers in await asyncio.gather(*(first_reads(user) for user in users)):
        bodies = [answer.json() for answer in answers]
        assert all(answer.status_code == 200 for answer in answers), bodies
        assert all(body["count"] == 1 for body in bodies), bodies
        assert len({body["characters"][0]["acquired_at"] for body in bodies}) == 1, "every answer shows the one row"
    owned = await tables.count(database_url, "user_characters", "WHERE user_id LIKE 'racer-%'")
    ledger = await tables.count(database_url, "reward_ledger", "WHERE user_id LIKE 'racer-%'")
    assert (owned, ledger) == (len(users), len(users))
    claims = [await redis_client.get(keys.reward(reward_id(user, DEFAULT.character_id))) for user in users]
    assert claims == ["first-sight"] * len(users)


async def test_a_user_who_owns_it_already_is_granted_nothing_more(
    persist_http: httpx.AsyncClient, make_gateway: MakeGateway, database_url: str, store: JobStore
) -> None:
    # A first scan's grant, backed in Redis as the reward stage backs it (persist writes nothing else).
    event = await back(store, granted("veteran", DEFAULT.character_id, "job-v1"))
    assert await deliver(persist_http, "/", event) == 202
    gateway = await make_gateway(DATABASE_URL=database_url)
    body = (await gateway.client.get("/api/v1/me/characters", headers=bearer("veteran"))).json()
    assert [(c["character_id"], c["job_id"]) for c in body["characters"]] == [(DEFAULT.character_id, "job-v1")]


async def test_a_scans_claim_not_yet_persisted_is_the_grant_shown(
    make_gateway: MakeGateway, database_url: str, redis_client: aioredis.Redis
) -> None:
    """A first scan granted it (its claim holds the job id) but persist has not written it yet: the read writes
    the same grant, with that scan's job id, and persist's own insert then changes nothing."""
    await redis_client.set(keys.reward(reward_id("scanner", DEFAULT.character_id)), "job-s1")
    gateway = await make_gateway(DATABASE_URL=database_url)
    body = (await gateway.client.get("/api/v1/me/characters", headers=bearer("scanner"))).json()
    assert [(c["character_id"], c["job_id"]) for c in body["characters"]] == [(DEFAULT.character_id, "job-s1")]
