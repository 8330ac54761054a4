"""The runner plays the cluster's ingress on the gateway's public port: the real authz checks every request to a
checked path before the real gateway sees it, and a revocation published on the blacklist fanout is refused at
the edge within the propagation target measured for the caches (docs/benchmarks.md, cache-sync: p99 < 50 ms)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import httpx
import pytest

from eco2.cachesync.events import SyncEventType
from eco2_tools.local.runner import LocalPack
from tests.cachesync.support import AMQP_URL, Exchanges, delete_made_exchanges, new_token, publish_on
from tests.gateway.support import SECRET

PROPAGATION_TARGET_SECONDS = 0.050


@pytest.fixture
async def exchanges() -> AsyncIterator[Exchanges]:
    yield Exchanges.fresh()
    await delete_made_exchanges()


def edge_checks(pack: LocalPack, outcome: str) -> float:
    sample = pack.metrics.registry.get_sample_value("eco2_runner_edge_checks_total", {"outcome": outcome})
    return sample or 0.0


async def test_the_edge_asks_authz_and_refuses_a_token_revoked_on_the_fanout_within_the_target(
    start_pack: Callable[..., Any], exchanges: Exchanges
) -> None:
    pack: LocalPack = await start_pack(None, extra_env={**exchanges.env(), "ECO2_JWT_SECRET": SECRET})
    token = new_token()
    url = f"http://127.0.0.1:{pack.options.gateway_port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        assert (await http.get("/api/v1/me/scans")).json()["error"] == "missing_token"
        assert edge_checks(pack, "denied") == 1, "refused by authz at the edge, not by the gateway"
        assert (await http.get("/api/v1/scan/categories")).status_code == 200  # open: no token needed
        assert edge_checks(pack, "unchecked") == 1
        assert (await http.get("/api/v1/me/scans", headers=token.headers)).status_code == 200
        assert edge_checks(pack, "allowed") == 1

        # A checked path the gateway has no route for: 404 from the gateway once the edge let it through, 401
        # only from the edge (the gateway checks no token before its 404), so each answer says who decided.
        probe = "/api/v1/edge-probe"
        assert (await http.get(probe, headers=token.headers)).status_code == 404
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()  # publisher confirms: publish returns once RabbitMQ took it
            await channel.declare_exchange(exchanges.blacklist, aio_pika.ExchangeType.FANOUT, durable=True)
            published = time.perf_counter()
            await publish_on(channel, exchanges.blacklist, SyncEventType.TOKEN_REVOKED, token.revoked())
            # The contract: whatever reaches the edge once the target has passed since the publish is refused.
            await asyncio.sleep(max(0.0, published + PROPAGATION_TARGET_SECONDS - time.perf_counter()))
            answer = await http.get(probe, headers=token.headers)
        assert answer.status_code == 401, "still let through the edge the propagation target after the publish"
        assert answer.json()["error"] == "token_revoked"
        assert edge_checks(pack, "denied") == 2
        # The gateway behind it still checks the token itself, with its own copy of the blacklist.
        (replica,) = pack.pools["gateway"].replicas
        direct = await http.get(f"{replica.url}/api/v1/me/scans", headers=token.headers)
        assert direct.json()["error"] == "token_revoked"
