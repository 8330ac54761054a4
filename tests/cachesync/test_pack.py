"""End to end under the local runner, from the real manifests: an event published on a fanout exchange goes
through the RabbitmqSource, the broker ingress and the Trigger to its sync function, which writes Redis."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from eco2 import keys
from eco2.cachesync.events import CatalogUpdated, Exchange, SyncEventType, TokenRevoked
from eco2.rules import CharacterCatalog
from eco2_tools.local.runner import LocalPack
from tests.cachesync.support import publish
from tests.local.conftest import start_pack  # noqa: F401 - the fixture
from tests.support import wait_for


async def test_events_on_the_exchanges_reach_redis_through_the_sources(
    start_pack: Callable[..., Any],  # noqa: F811
    redis_client: aioredis.Redis,
) -> None:
    pack: LocalPack = await start_pack(None)
    assert {source.spec.name for source in pack.sources} == {"auth-blacklist", "character-catalog"}
    jti = f"pack-{uuid.uuid4().hex}"
    # The manifests' own exchange names: any other pack running on this RabbitMQ hears a random jti too.
    await publish(
        Exchange.BLACKLIST,
        SyncEventType.TOKEN_REVOKED,
        TokenRevoked(jti=jti, user_id="u", expires_at=time.time() + 600),
    )

    async def blacklisted() -> bool:
        return bool(await redis_client.exists(keys.revoked_token(jti)))

    await wait_for(blacklisted, timeout=30, what="blacklist-sync writing the key")
    version = int(time.time())
    catalog = CatalogUpdated(version=version, characters=CharacterCatalog.load().as_records())
    await publish(Exchange.CATALOG, SyncEventType.CATALOG_UPDATED, catalog)

    async def stored() -> bool:
        held = await redis_client.hget(keys.CHARACTER_CATALOG, "version")
        return held is not None and int(held) >= version

    await wait_for(stored, timeout=30, what="catalog-sync storing the version")
    assert json.loads(str(await redis_client.hget(keys.CHARACTER_CATALOG, "characters")))
