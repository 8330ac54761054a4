"""blacklist-sync, catalog-sync and authz, each served as `eco2 serve` serves it (functions-framework's app)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from eco2 import keys
from eco2.adapter import ServedFunction
from eco2.cachesync.events import SyncEventType
from eco2.functions.authz import Authz
from eco2.rules import CharacterCatalog
from eco2.serving import load_function
from tests.cachesync.support import Exchanges, function_env, new_token, role_token

Client = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def client(redis_client: aioredis.Redis) -> AsyncIterator[Client]:
    started: list[tuple[httpx.AsyncClient, ServedFunction]] = []

    async def make(name: str) -> httpx.AsyncClient:
        app, function = load_function(name)
        await function.start(function_env(Exchanges.fresh()))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
        started.append((http, function))
        return http

    yield make
    for http, function in started:
        await http.aclose()
        await function.stop()


def ce(event_type: str, data: object) -> dict[str, Any]:
    """The curl of the README, as httpx arguments: a binary-mode CloudEvent."""
    headers = {
        "ce-specversion": "1.0",
        "ce-type": event_type,
        "ce-source": "/curl",
        "ce-id": "1",
        "content-type": "application/json",
    }
    return {"headers": headers, "content": json.dumps(data)}


async def test_blacklist_sync_keeps_the_token_until_it_would_expire(
    client: Client, redis_client: aioredis.Redis
) -> None:
    http = await client("blacklist-sync")
    token = new_token(ttl=300)
    data = token.revoked().model_dump()
    for _ in range(2):  # idempotent: the same key, the same expiry
        assert (await http.post("/", **ce(SyncEventType.TOKEN_REVOKED, data))).status_code == 202
        ttl = await redis_client.pttl(keys.revoked_token(token.jti))
        assert 295_000 < ttl <= 300_000
    stored = json.loads(str(await redis_client.get(keys.revoked_token(token.jti))))
    assert stored == {"user_id": token.user, "expires_at": token.expires_at}


async def test_blacklist_sync_keeps_nothing_for_an_expired_token(client: Client, redis_client: aioredis.Redis) -> None:
    http = await client("blacklist-sync")
    data = {"jti": "old", "user_id": "u", "expires_at": time.time() - 5}
    assert (await http.post("/", **ce(SyncEventType.TOKEN_REVOKED, data))).status_code == 202
    assert not await redis_client.exists(keys.revoked_token("old"))


@pytest.mark.parametrize(
    ("function", "event_type", "data", "code"),
    [
        ("blacklist-sync", SyncEventType.TOKEN_REVOKED, {"jti": "x", "user_id": "u"}, "invalid_data"),
        ("blacklist-sync", SyncEventType.TOKEN_REVOKED, {"jti": "", "user_id": "u", "expires_at": 1}, "invalid_data"),
        ("blacklist-sync", SyncEventType.CATALOG_UPDATED, {"version": 1}, "unexpected_type"),
        ("catalog-sync", SyncEventType.CATALOG_UPDATED, {"version": 0, "characters": [{}]}, "invalid_data"),
        ("catalog-sync", SyncEventType.CATALOG_UPDATED, {"version": 2, "characters": [{"x": 1}]}, "invalid_catalog"),
    ],
)
async def test_bad_events_are_poison(client: Client, function: str, event_type: str, data: object, code: str) -> None:
    answer = await (await client(function)).post("/", **ce(event_type, data))
    assert answer.status_code in (400, 422)
    assert answer.json()["error"] == code


async def test_catalog_sync_never_lets_an_older_version_overwrite_a_newer_one(
    client: Client, redis_client: aioredis.Redis
) -> None:
    http = await client("catalog-sync")
    records = CharacterCatalog.load().as_records()

    async def offer(version: int, count: int) -> None:
        data = {"version": version, "characters": records[:count]}
        assert (await http.post("/", **ce(SyncEventType.CATALOG_UPDATED, data))).status_code == 202

    await offer(5, 3)
    await offer(4, 2)  # older: ignored
    await offer(5, 2)  # the same version again: ignored (idempotent)
    stored = await redis_client.hgetall(keys.CHARACTER_CATALOG)
    assert stored["version"] == "5"
    assert len(json.loads(stored["characters"])) == 3


async def test_authz_speaks_envoy_ext_authz(client: Client, redis_client: aioredis.Redis) -> None:
    http = await client("authz")
    token = new_token()
    answer = await http.get("/any/path?x=1", headers=token.headers)
    assert answer.status_code == 200
    assert (answer.headers["x-user-id"], answer.headers["x-user-role"]) == (token.user, "user")
    missing = await http.post("/api/v1/scan")
    assert (missing.status_code, missing.json()["error"]) == (401, "missing_token")
    assert "Bearer" in missing.headers["www-authenticate"]
    forged = await http.get("/", headers={"Authorization": f"Bearer {token.raw[:-3]}abc"})
    assert (forged.status_code, forged.json()["error"]) == (401, "invalid_token")
    guest = await http.get("/", headers={"Authorization": f"Bearer {role_token('guest')}"})
    assert (guest.status_code, guest.json()["error"]) == (403, "forbidden_role")
    admin = await http.get("/", headers={"Authorization": f"Bearer {role_token('admin')}"})
    assert admin.headers["x-user-role"] == "admin"
    trusted = await http.get("/", headers={"x-user-id": "someone"})
    assert trusted.status_code == 401, "a client's X-User-ID is never trusted by authz"
    assert (await http.get("/readyz")).status_code == 200


async def test_authz_refuses_a_token_revoked_in_redis_before_it_started(redis_client: aioredis.Redis) -> None:
    token = new_token()
    await redis_client.set(keys.revoked_token(token.jti), "1", ex=600)
    authz = Authz()
    await authz.start(function_env(Exchanges.fresh()))
    try:
        assert authz.state.sync.warmed.is_set()
        assert await authz.state.auth.blacklist.is_revoked(token.jti)
    finally:
        await authz.stop()
