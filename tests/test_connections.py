"""TLS to Redis and RabbitMQ through a real TLS endpoint, and a time limit on every kind of outbound client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import redis.asyncio
from aiormq.exceptions import AMQPConnectionError

from eco2.connections import (
    ConnectionSettings,
    amqp_connect,
    async_redis,
    async_redis_pool,
    http_timeout,
    sync_redis,
)
from eco2.env import SettingsError
from eco2.jobs import JobStore
from tests.support import REDIS_TEST_URL, wait_for
from tests.tls_proxy import ThrowawayCertificates, TlsProxy, make_certificates

AMQP_UPSTREAM = ("127.0.0.1", 5672)
REDIS_PARTS = urlsplit(REDIS_TEST_URL)
REDIS_UPSTREAM = (REDIS_PARTS.hostname or "127.0.0.1", REDIS_PARTS.port or 6379)
DB_PATH = REDIS_PARTS.path or "/0"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCertificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def redis_tls(certificates: ThrowawayCertificates) -> Iterator[TlsProxy]:
    proxy = TlsProxy(certificates, REDIS_UPSTREAM).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def amqp_tls(certificates: ThrowawayCertificates) -> Iterator[TlsProxy]:
    proxy = TlsProxy(certificates, AMQP_UPSTREAM).start()
    yield proxy
    proxy.stop()


def _rediss(proxy: TlsProxy) -> str:
    return f"rediss://127.0.0.1:{proxy.port}{DB_PATH}"


def _with_ca(certificates: ThrowawayCertificates) -> dict[str, str]:
    return {"ECO2_TLS_CA_FILE": str(certificates.ca_file)}


# -- TLS: verified with the configured CA, refused without it ----------------------------------------------


async def test_rediss_clients_connect_through_tls_with_the_ca(
    redis_tls: TlsProxy, certificates: ThrowawayCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _rediss(redis_tls)
    client = async_redis(url, env=_with_ca(certificates))
    try:
        assert await client.ping()
        await client.set("eco2:test:tls", "through-tls", ex=60)
    finally:
        await client.aclose()
    blocking = sync_redis(url, env=_with_ca(certificates))
    assert blocking.get("eco2:test:tls") == "through-tls"
    blocking.close()
    # The job store (every stage, the gateway's state, replay) reads the same settings from the environment.
    monkeypatch.setenv("ECO2_TLS_CA_FILE", str(certificates.ca_file))
    store = JobStore.from_url(url, ttl_seconds=60)
    try:
        assert await store.ping()
    finally:
        await store.aclose()
    assert redis_tls.handshakes >= 3


async def test_rediss_without_the_ca_is_refused(redis_tls: TlsProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECO2_TLS_CA_FILE", raising=False)
    client = async_redis(_rediss(redis_tls), env={})
    try:
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ping()
    finally:
        await client.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        sync_redis(_rediss(redis_tls), env={}).ping()


async def test_amqps_connects_through_tls_with_the_ca_and_is_refused_without(
    amqp_tls: TlsProxy, certificates: ThrowawayCertificates
) -> None:
    url = f"amqps://guest:guest@127.0.0.1:{amqp_tls.port}/%2F"
    connection = await amqp_connect(url, env=_with_ca(certificates))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        assert queue.name.startswith("amq.gen-")
    finally:
        await connection.close()
    with pytest.raises(AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await amqp_connect(url, env={})


async def test_the_gateway_and_a_stage_run_over_tls_with_the_ca_given_in_their_environment(
    redis_tls: TlsProxy, amqp_tls: TlsProxy, certificates: ThrowawayCertificates, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every connection of a whole function through the TLS endpoints: the gateway's pool, stream reader, job
    store and cache sync (Redis warm-up and the AMQP consumer), and a stage's job store."""
    from eco2.functions.gateway import Gateway
    from eco2.serving import load_function
    from tests.cachesync.support import Exchanges, delete_made_exchanges
    from tests.gateway.conftest import gateway_env

    monkeypatch.delenv("ECO2_TLS_CA_FILE", raising=False)  # the function's own environment carries it
    tls = {
        "REDIS_URL": _rediss(redis_tls),
        "AMQP_URL": f"amqps://guest:guest@127.0.0.1:{amqp_tls.port}/%2F",
        **_with_ca(certificates),
    }
    before = (redis_tls.handshakes, amqp_tls.handshakes)
    gateway = Gateway()
    await gateway.start(gateway_env("http://127.0.0.1:9", **Exchanges.fresh().env(), **tls))
    try:
        assert await gateway.context.ready()
        assert await gateway.context.caches.wait_warm(5)

        async def consuming() -> bool:
            return gateway.context.caches.live

        await wait_for(consuming, timeout=10, what="the cache sync consuming over amqps://")
        # The pool, the stream reader and the warm-up each connected through the Redis endpoint; the consumer
        # through the AMQP one.
        assert redis_tls.handshakes - before[0] >= 3
        assert amqp_tls.handshakes - before[1] >= 1
    finally:
        await gateway.stop()
        await delete_made_exchanges()
    app, rules = load_function("rules")
    await rules.start({**tls, "LOG_LEVEL": "WARNING"})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rules") as http:
            assert (await http.get("/readyz")).status_code == 200  # its job store answers through TLS
    finally:
        await rules.stop()


def test_plain_urls_get_no_tls_options_and_a_client_cert_needs_its_key(certificates: ThrowawayCertificates) -> None:
    settings = ConnectionSettings.from_env(_with_ca(certificates))
    assert "ssl_ca_certs" not in settings.redis_options("redis://127.0.0.1:6379/0")
    assert settings.redis_options("rediss://h:6380/0")["ssl_ca_certs"] == str(certificates.ca_file)
    assert "ssl_context" not in settings.amqp_options("amqp://h/")
    with pytest.raises(SettingsError, match="ECO2_TLS_KEY_FILE"):
        ConnectionSettings.from_env({"ECO2_TLS_CERT_FILE": str(certificates.cert_file)})


# -- time limits: a server that accepts and never answers ---------------------------------------------------

LIMIT = 0.3
LIMITS = {
    "ECO2_REDIS_SOCKET_TIMEOUT_SECONDS": str(LIMIT),
    "ECO2_AMQP_CONNECT_TIMEOUT_SECONDS": str(LIMIT),
    "ECO2_HTTP_TIMEOUT_SECONDS": str(LIMIT),
    "ECO2_DB_CONNECT_TIMEOUT_SECONDS": str(LIMIT),
}
WITHIN = 3.0  # the call fails well before this: the limit holds, nothing waits for the OS's own timeouts


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A listener that accepts every connection and never sends a byte."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()


async def _fails_within(call: Awaitable[object]) -> float:
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017,PT011  # each client names its timeout differently
        await asyncio.wait_for(call, WITHIN * 2)
    elapsed = time.monotonic() - started
    assert elapsed < WITHIN, f"the call took {elapsed:.1f} s"
    return elapsed


async def test_redis_read_is_bounded(silent_port: int) -> None:
    client = async_redis(f"redis://127.0.0.1:{silent_port}/0", env=LIMITS)
    try:
        with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
            await asyncio.wait_for(client.ping(), WITHIN)
    finally:
        await client.aclose()
    started = time.monotonic()
    with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
        await asyncio.to_thread(sync_redis(f"redis://127.0.0.1:{silent_port}/0", env=LIMITS).ping)
    assert time.monotonic() - started < WITHIN


async def test_amqp_connect_is_bounded(silent_port: int) -> None:
    await _fails_within(amqp_connect(f"amqp://guest:guest@127.0.0.1:{silent_port}/", env=LIMITS))


async def test_http_read_is_bounded(silent_port: int) -> None:
    async with httpx.AsyncClient(timeout=http_timeout(LIMITS)) as http:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"http://127.0.0.1:{silent_port}/", content=b"{}")
    assert time.monotonic() - started < WITHIN


async def test_postgres_connect_is_bounded(silent_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from eco2.persist.postgres import PostgresStore

    for name, value in LIMITS.items():
        monkeypatch.setenv(name, value)
    await _fails_within(PostgresStore.open(f"postgresql://postgres@127.0.0.1:{silent_port}/none", 1))


def test_s3_client_has_connect_and_read_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from eco2.storage import Storage, StorageSettings

    for name, value in LIMITS.items():
        monkeypatch.setenv(name, value)
    settings = StorageSettings.from_env({"S3_ENDPOINT_URL": "http://127.0.0.1:9", "ECO2_S3_BUCKET": "b"})
    assert settings is not None
    config = Storage(settings)._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, LIMIT)
    assert config.retries["total_max_attempts"] == 3


async def test_a_redis_pool_opens_at_most_its_bound_however_many_callers_wait() -> None:
    # A model stage's replica holds hundreds of deliveries: each opening its own connection at once timed out.
    name = f"eco2-pool-test-{time.monotonic_ns()}"
    client = async_redis_pool(REDIS_TEST_URL, env={"ECO2_REDIS_MAX_CONNECTIONS": "3"}, client_name=name)
    try:
        # Each call holds its connection 20 ms on the server (a BLPOP on an empty key that times out): 60 at once
        # would open 60 without the bound.
        calls = [client.blpop([f"{name}-nothing"], timeout=0.02) for _ in range(60)]
        watching = asyncio.ensure_future(asyncio.gather(*calls))
        seen = 0
        while not watching.done():
            seen = max(seen, sum(1 for c in await sync_clients() if c.get("name") == name))
            await asyncio.sleep(0.01)
        assert len(await watching) == 60
        assert 1 <= seen <= 3
    finally:
        await client.aclose()


async def sync_clients() -> list[dict[str, str]]:
    return await asyncio.to_thread(lambda: list(redis.Redis.from_url(REDIS_TEST_URL).client_list()))


def test_a_job_store_takes_its_pool_bound_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECO2_REDIS_MAX_CONNECTIONS", "7")
    monkeypatch.setenv("ECO2_REDIS_POOL_WAIT_SECONDS", "12")
    store = JobStore.from_url(REDIS_TEST_URL, ttl_seconds=60)
    pool = store.redis.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout) == (7, 12.0)
    defaults = ConnectionSettings.from_env({})
    assert (defaults.redis_max_connections, defaults.redis_pool_wait_seconds) == (50, 30.0)
