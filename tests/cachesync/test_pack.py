"""End to end under the local runner, from the real manifests: an event published on a fanout exchange goes
through the RabbitmqSource, the broker ingress and the Trigger to its sync function, which writes Redis.

The manifests are copied with this run's own exchange names: publishing on the real ones would leave a message
in the source queue of a developer's stopped pack, which their next `eco2 up` would apply to their Redis.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import redis.asyncio as aioredis
import yaml

from eco2 import keys
from eco2.cachesync.events import CatalogUpdated, Exchange, SyncEventType, TokenRevoked
from eco2.rules import CharacterCatalog
from eco2_tools.local.runner import LocalPack
from tests.cachesync.support import AMQP_URL, Exchanges, publish
from tests.local.conftest import start_pack  # noqa: F401 - the fixture
from tests.support import ROOT, wait_for


def manifests_on(exchanges: Exchanges, target: Path) -> Path:
    """The project's manifests, their RabbitmqSources reading `exchanges` instead of the real exchanges."""
    shutil.copytree(ROOT / "knative", target / "knative")
    shutil.copytree(ROOT / "eventing", target / "eventing")
    sources = target / "eventing" / "sources.yaml"
    renamed = {Exchange.BLACKLIST.value: exchanges.blacklist, Exchange.CATALOG.value: exchanges.catalog}
    documents = list(yaml.safe_load_all(sources.read_text(encoding="utf-8")))
    for document in documents:
        config = document["spec"]["rabbitmqResourcesConfig"]
        config["exchangeName"] = renamed[config["exchangeName"]]
    sources.write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return target


@pytest.fixture
async def real_exchanges_heard() -> AsyncIterator[list[bytes]]:
    """Every message published on the real exchanges while the test runs (a queue of its own on each)."""
    heard: list[bytes] = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (Exchange.BLACKLIST.value, Exchange.CATALOG.value):
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange)

            async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                heard.append(message.body)

            await queue.consume(keep, no_ack=True)
        yield heard


async def test_events_on_the_exchanges_reach_redis_through_the_sources(
    start_pack: Callable[..., Any],  # noqa: F811
    redis_client: aioredis.Redis,
    real_exchanges_heard: list[bytes],
    tmp_path: Path,
) -> None:
    exchanges = Exchanges.fresh()
    pack: LocalPack = await start_pack(manifests_on(exchanges, tmp_path / "manifests"), extra_env=exchanges.env())
    assert {source.spec.exchange for source in pack.sources} == {exchanges.blacklist, exchanges.catalog}
    jti = f"pack-{uuid.uuid4().hex}"
    await publish(
        exchanges.blacklist,
        SyncEventType.TOKEN_REVOKED,
        TokenRevoked(jti=jti, user_id="u", expires_at=time.time() + 600),
    )

    async def blacklisted() -> bool:
        return bool(await redis_client.exists(keys.revoked_token(jti)))

    await wait_for(blacklisted, timeout=30, what="blacklist-sync writing the key")
    version = int(time.time())
    catalog = CatalogUpdated(version=version, characters=CharacterCatalog.load().as_records())
    await publish(exchanges.catalog, SyncEventType.CATALOG_UPDATED, catalog)

    async def stored() -> bool:
        held = await redis_client.hget(keys.CHARACTER_CATALOG, "version")
        return held is not None and int(held) >= version

    await wait_for(stored, timeout=30, what="catalog-sync storing the version")
    assert json.loads(str(await redis_client.hget(keys.CHARACTER_CATALOG, "characters")))
    # Nothing of this test reached the names a developer's own pack reads.
    assert real_exchanges_heard == []
