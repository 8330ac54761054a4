"""`eco2 catalog push` and `eco2 revoke`, run as an operator runs them, against running replicas and the real
RabbitMQ; and the synchronous publisher under them (confirms: what no queue took, or no broker, fails loudly)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from eco2 import keys
from eco2.cachesync.events import SyncEventType, TokenRevoked
from eco2.cachesync.publisher import PublisherSettings, PublishFailed, SyncPublisher
from eco2.cachesync.store import store_revocation
from eco2.rules import CharacterCatalog
from tests.cachesync.support import (
    AMQP_URL,
    CLOSED_AMQP_URL,
    Exchanges,
    all_refuse,
    function_env,
    hearing,
    new_token,
    start_fleet,
    statuses,
    stop_all,
)
from tests.gateway.conftest import gateway_env
from tests.gateway.support import token
from tests.support import REDIS_TEST_URL, ROOT, wait_for

PROPAGATION_DEADLINE = 2.0


def run_eco2(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`eco2 <args>` in its own process, as an operator types it, on this run's Redis."""
    command = [sys.executable, "-m", "eco2_tools.cli", *args]
    full_env = {**os.environ, "REDIS_URL": REDIS_TEST_URL, "AMQP_URL": AMQP_URL, "COLUMNS": "200", **env}
    return subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60, check=False)


async def eco2(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_eco2, args, env)


def catalog_file(path: Path, default_name: str = "이코") -> Path:
    """The package's catalog with the default character renamed: a change every replica can be seen to hold."""
    records: list[dict[str, Any]] = CharacterCatalog.load().as_records()
    for record in records:
        if record["is_default"]:
            record["name"] = default_name
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


async def test_a_pushed_catalog_reaches_every_running_replica(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path, tmp_path: Path
) -> None:
    exchanges = Exchanges.fresh()
    env = gateway_env("http://127.0.0.1:9/", **exchanges.env(), AMQP_URL=AMQP_URL)
    fleet = await start_fleet("gateway", 3, env, child_log_dir)
    try:
        urls = [f"{child.url}/api/v1/characters" for child in fleet]
        assert {(await http.get(url)).json()["version"] for url in urls} == {0}
        pushed = await eco2(["catalog", "push", str(catalog_file(tmp_path / "c.json", "새이코")), "--wait", "0"], env)
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        assert "published catalog version 1 " in pushed.stdout, "Redis held none: version 1 is next"
        assert "confirmed by the broker" in pushed.stdout

        async def every_replica_has_it() -> bool:
            bodies = [(await http.get(url)).json() for url in urls]
            return all(body["version"] == 1 and body["characters"][0]["name"] == "새이코" for body in bodies)

        await wait_for(every_replica_has_it, timeout=PROPAGATION_DEADLINE, what="3 replicas holding version 1")
    finally:
        stop_all(fleet)


async def test_a_revocation_by_the_operator_is_refused_by_every_replica(
    http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    exchanges = Exchanges.fresh()
    fleet = await start_fleet("authz", 3, function_env(exchanges), child_log_dir)
    try:
        urls = [child.url for child in fleet]
        revoked, other = new_token(), new_token()
        assert await statuses(http, urls, revoked.headers) == [200] * 3
        args = ["revoke", "--jti", revoked.jti, "--user", revoked.user, "--expires-at", str(revoked.expires_at)]
        done = await eco2(args, exchanges.env())
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"revoked token {revoked.jti} of {revoked.user}" in done.stdout
        await wait_for(lambda: all_refuse(http, urls, revoked.headers), timeout=PROPAGATION_DEADLINE, what="refusals")
        assert await statuses(http, urls, other.headers) == [200] * 3, "only that token"
    finally:
        stop_all(fleet)


def issued_at(user: str, at: float) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, now=at)}"}


async def test_a_users_revocation_by_the_operator_refuses_their_earlier_tokens_everywhere(
    http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    exchanges = Exchanges.fresh()
    fleet = await start_fleet("authz", 3, function_env(exchanges), child_log_dir)
    try:
        urls, now = [child.url for child in fleet], time.time()
        earlier, later, other = (
            issued_at("stolen", now - 60),
            issued_at("stolen", now),
            issued_at("bystander", now - 60),
        )
        assert await statuses(http, urls, earlier) == [200] * 3
        done = await eco2(["revoke", "--user", "stolen", "--issued-before", str(now - 30)], exchanges.env())
        assert done.returncode == 0, done.stdout + done.stderr
        assert "revoked every token of stolen issued until" in done.stdout
        await wait_for(lambda: all_refuse(http, urls, earlier), timeout=PROPAGATION_DEADLINE, what="refusals")
        assert await statuses(http, urls, later) == [200] * 3, "signed in again after the cut-off"
        assert await statuses(http, urls, other) == [200] * 3, "only that user"
    finally:
        stop_all(fleet)


async def test_a_users_revocation_in_redis_is_refused_after_warm_up_and_with_the_broker_down(
    redis_client: aioredis.Redis, http: httpx.AsyncClient, child_log_dir: Path
) -> None:
    """What blacklist-sync stores: read at a replica's warm-up, and asked per request while its broker is down."""
    now = time.time()
    before = TokenRevoked(user_id="gone-before", issued_before=now - 30, expires_at=now + 600)
    assert await store_revocation(redis_client, before)
    warm = await start_fleet("authz", 1, function_env(Exchanges.fresh()), child_log_dir)
    cut_off = await start_fleet("authz", 1, function_env(Exchanges.fresh(), AMQP_URL=CLOSED_AMQP_URL), child_log_dir)
    try:
        urls = [warm[0].url, cut_off[0].url]
        assert await statuses(http, urls, issued_at("gone-before", now - 60)) == [401, 401]
        assert await statuses(http, urls, issued_at("gone-before", now)) == [200, 200]
        after = TokenRevoked(user_id="gone-after", issued_before=now - 30, expires_at=now + 600)
        assert await store_revocation(redis_client, after)  # written after both started: no event
        assert await statuses(http, [cut_off[0].url], issued_at("gone-after", now - 60)) == [401]
    finally:
        stop_all([*warm, *cut_off])


async def test_push_waits_for_catalog_sync_to_store_the_version_and_says_so(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    exchanges = Exchanges.fresh()
    await redis_client.hset(keys.CHARACTER_CATALOG, mapping={"version": 4, "characters": "[]"})
    async with hearing(exchanges.catalog) as heard:
        args = ["catalog", "push", str(catalog_file(tmp_path / "c.json"))]
        pushing = asyncio.create_task(eco2(args, exchanges.env()))
        # Plays catalog-sync: Redis written from what arrives on the exchange.
        message = await asyncio.wait_for(heard.get(), timeout=30)
        await redis_client.hset(keys.CHARACTER_CATALOG, "version", json.loads(message.body)["version"])
        pushed = await pushing
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert "published catalog version 5 " in pushed.stdout, "the stored version + 1"
    assert "applied: catalog-sync stored version 5" in pushed.stdout


async def test_push_says_when_nothing_stored_the_version(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    exchanges = Exchanges.fresh()
    async with hearing(exchanges.catalog):
        args = ["catalog", "push", str(catalog_file(tmp_path / "c.json")), "--wait", "0.5"]
        pushed = await eco2(args, exchanges.env())
    assert pushed.returncode == 1
    assert "not seen applied: Redis holds version 0" in pushed.stdout


async def test_push_refuses_a_version_every_replica_would_ignore(redis_client: aioredis.Redis, tmp_path: Path) -> None:
    await redis_client.hset(keys.CHARACTER_CATALOG, "version", 7)
    args = ["catalog", "push", str(catalog_file(tmp_path / "c.json")), "--version", "7"]
    refused = await eco2(args, Exchanges.fresh().env())
    assert refused.returncode == 2
    assert "version 7 is not newer than the stored 7" in refused.stdout


async def test_push_refuses_a_catalog_the_replicas_would_refuse(tmp_path: Path) -> None:
    records = [record for record in CharacterCatalog.load().as_records() if not record["is_default"]]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    refused = await eco2(["catalog", "push", str(path)], Exchanges.fresh().env())
    assert refused.returncode == 2
    assert "not a valid catalog" in refused.stdout
    assert "exactly one default character" in refused.stdout


def test_an_event_no_queue_takes_is_not_reported_as_published() -> None:
    settings = PublisherSettings.from_env({**Exchanges.fresh().env(), "AMQP_URL": AMQP_URL})  # nothing bound
    with SyncPublisher(settings, source="/tests") as publisher, pytest.raises(PublishFailed) as failed:
        publisher.revoke_token("j", "u", time.time() + 60)
    assert failed.value.code == "unroutable"


def test_an_unreachable_broker_fails_within_the_timeout() -> None:
    settings = PublisherSettings.from_env({"AMQP_URL": CLOSED_AMQP_URL, "ECO2_PUBLISH_TIMEOUT_SECONDS": "2"})
    started = time.monotonic()
    with SyncPublisher(settings, source="/tests") as publisher, pytest.raises(PublishFailed) as failed:
        publisher.publish_catalog(1, CharacterCatalog.load().as_records())
    assert failed.value.code == "broker_unreachable"
    assert time.monotonic() - started < 5


async def test_the_publisher_sends_what_the_replicas_read() -> None:
    """The binary-mode CloudEvent of eco2.cachesync.events.amqp_message, persistent, its id the message id."""
    exchanges = Exchanges.fresh()
    settings = PublisherSettings.from_env({**exchanges.env(), "AMQP_URL": AMQP_URL})

    def send() -> None:
        with SyncPublisher(settings, source="/tests/publisher") as publisher:
            publisher.revoke_token("j-1", "u-1", 2_000_000_000.0)
            publisher.revoke_token("j-2", "u-1", 2_000_000_000.0)  # the same connection, again

    async with hearing(exchanges.blacklist) as heard:
        await asyncio.to_thread(send)
        first = await asyncio.wait_for(heard.get(), timeout=5)
        second = await asyncio.wait_for(heard.get(), timeout=5)
    assert first.headers["cloudEvents:type"] == SyncEventType.TOKEN_REVOKED.value
    assert first.headers["cloudEvents:source"] == "/tests/publisher"
    assert first.message_id == first.headers["cloudEvents:id"] != second.headers["cloudEvents:id"]
    assert first.persistent
    assert json.loads(first.body) == {"jti": "j-1", "user_id": "u-1", "expires_at": 2_000_000_000.0}


async def test_the_publisher_reaches_a_live_node_past_a_dead_one_in_the_list() -> None:
    """AMQP_URL listing a cluster's nodes (eco2.amqp_cluster): the first refuses connections, the second answers."""
    exchanges = Exchanges.fresh()
    settings = PublisherSettings.from_env({**exchanges.env(), "AMQP_URL": f"{CLOSED_AMQP_URL},{AMQP_URL}"})

    def send() -> None:
        with SyncPublisher(settings, source="/tests/publisher") as publisher:
            publisher.revoke_token("j-cluster", "u-1", 2_000_000_000.0)

    async with hearing(exchanges.blacklist) as heard:
        await asyncio.to_thread(send)
        message = await asyncio.wait_for(heard.get(), timeout=5)
    assert json.loads(message.body)["jti"] == "j-cluster"
