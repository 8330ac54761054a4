"""Opening connections to Redis and RabbitMQ: TLS with the operator's CA, and a time limit on every wait.

Every Redis and AMQP client of the pack is made here, so `rediss://` / `amqps://` URLs verify the server against
ECO2_TLS_CA_FILE (else the system's CAs), present a client certificate when one is configured, and no connect or
read waits without a bound. Settings come from the environment when a client is made, never at import.

A `redis+sentinel://` URL (eco2.redis_sentinel) makes a client of the master a set of Sentinels names; an AMQP
URL may list several nodes of one cluster, comma-separated (eco2.amqp_cluster), and a client connects to the
first live one and moves to another when its node goes.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eco2.amqp_cluster import amqp_addresses, connect_first_live, connect_robust_cluster
from eco2.env import SettingsError, env_float, env_int
from eco2.redis_sentinel import SentinelUrl, async_master, is_sentinel_url, sync_master

if TYPE_CHECKING:
    import httpx
    import redis
    import redis.asyncio as aioredis
    from aio_pika.abc import AbstractConnection, AbstractRobustConnection

TLS_REDIS_SCHEMES = ("rediss", "rediss+sentinel")
TLS_AMQP_SCHEME = "amqps"


@dataclass(frozen=True)
class ConnectionSettings:
    # PEM bundle of the CA(s) that signed the servers' certificates; None: the system's trust store.
    tls_ca_file: str | None = None
    # A client certificate and its key, for servers that require mutual TLS; both or neither.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    redis_connect_timeout_seconds: float = 2.0
    # A reply that takes longer is a stalled server: the caller's retry path takes over.
    redis_socket_timeout_seconds: float = 5.0
    amqp_connect_timeout_seconds: float = 5.0
    # Plain HTTP clients (replay and `eco2 dlq` to K_SINK), the photo store (boto3), PostgreSQL's connect.
    http_connect_timeout_seconds: float = 2.0
    http_timeout_seconds: float = 10.0
    db_connect_timeout_seconds: float = 5.0
    # A function's job store (eco2.jobs.JobStore.from_url) shares at most this many Redis connections: a replica
    # holding hundreds of deliveries (a model stage's 200) would otherwise open a connection for each at once, and
    # that connect storm timed out under load.
    redis_max_connections: int = 50
    # How long a caller waits for a free one. Not a Redis stall (each held connection still times out on its
    # socket timeout): a busy replica's slots come free as its event loop gets round to the replies, which took
    # longer than 5 s with 200 answers streaming on a loaded machine, and failing then costs a retry after 60 s.
    redis_pool_wait_seconds: float = 30.0
    # Behind Sentinel: how long a command keeps reconnecting while the sentinels promote a replica (their
    # down-after-milliseconds plus the election, a few seconds); past it the caller's own retry path takes over.
    redis_failover_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnectionSettings:
        env = os.environ if env is None else env
        cert, key = env.get("ECO2_TLS_CERT_FILE") or None, env.get("ECO2_TLS_KEY_FILE") or None
        if (cert is None) != (key is None):
            raise SettingsError("ECO2_TLS_CERT_FILE and ECO2_TLS_KEY_FILE must be set together")
        # Every time limit is ECO2_<FIELD NAME>, defaulting to the field's default above.
        limits = {
            field.name: _seconds(env, f"ECO2_{field.name.upper()}", getattr(cls, field.name))
            for field in fields(cls)
            if field.name.endswith("_seconds")
        }
        pool = env_int(env, "ECO2_REDIS_MAX_CONNECTIONS", cls.redis_max_connections, minimum=2)
        return cls(
            tls_ca_file=env.get("ECO2_TLS_CA_FILE") or None,
            tls_cert_file=cert,
            tls_key_file=key,
            redis_max_connections=pool,
            **limits,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying context: the server's certificate must chain to the CA and name the host."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file)
        if self.tls_cert_file is not None:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    def redis_options(self, url: str) -> dict[str, Any]:
        """redis-py keyword arguments for `url`: the time limits, and TLS verification for rediss://."""
        options: dict[str, Any] = {
            "socket_connect_timeout": self.redis_connect_timeout_seconds,
            "socket_timeout": self.redis_socket_timeout_seconds,
        }
        if urlsplit(url).scheme in TLS_REDIS_SCHEMES:
            options.update(
                ssl_cert_reqs="required",
                ssl_check_hostname=True,
                ssl_ca_certs=self.tls_ca_file,
                ssl_certfile=self.tls_cert_file,
                ssl_keyfile=self.tls_key_file,
            )
        return options

    def amqp_options(self, url: str) -> dict[str, Any]:
        """aio-pika keyword arguments for `url`: the connect time limit, and a verifying context for amqps://."""
        options: dict[str, Any] = {"timeout": self.amqp_connect_timeout_seconds}
        if urlsplit(url).scheme == TLS_AMQP_SCHEME:
            options["ssl_context"] = self.ssl_context()
        return options


def http_timeout(env: Source = None) -> httpx.Timeout:
    """httpx limits: connect within ECO2_HTTP_CONNECT_TIMEOUT_SECONDS, each read/write/pool wait within the other."""
    import httpx

    settings = _resolved(env)
    return httpx.Timeout(settings.http_timeout_seconds, connect=settings.http_connect_timeout_seconds)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    return env_float(env, name, default, minimum=0.01)


# Where a client's settings come from: an environment to read (None: the process's), or settings already read.
Source = Mapping[str, str] | ConnectionSettings | None


def _resolved(env: Source) -> ConnectionSettings:
    return env if isinstance(env, ConnectionSettings) else ConnectionSettings.from_env(env)


def async_redis(url: str, *, env: Source = None, **overrides: Any) -> aioredis.Redis:
    """An asyncio Redis client for `url` (decoded replies unless overridden); `overrides` win over the defaults."""
    import redis.asyncio as aioredis

    settings = _resolved(env)
    options = {"decode_responses": True, **settings.redis_options(url), **overrides}
    if is_sentinel_url(url):
        return async_master(SentinelUrl.parse(url), options, failover_wait_seconds=settings.redis_failover_wait_seconds)
    return aioredis.Redis.from_url(url, **options)


def async_redis_pool(url: str, *, env: Source = None, **overrides: Any) -> aioredis.Redis:
    """An asyncio Redis client over a bounded pool (BlockingConnectionPool: a caller waits `timeout` for a slot);
    by default ECO2_REDIS_MAX_CONNECTIONS slots, each waited for up to ECO2_REDIS_POOL_WAIT_SECONDS."""
    import redis.asyncio as aioredis

    settings = _resolved(env)
    bounds = {"max_connections": settings.redis_max_connections, "timeout": settings.redis_pool_wait_seconds}
    options = {"decode_responses": True, **settings.redis_options(url), **bounds, **overrides}
    if is_sentinel_url(url):
        return async_master(SentinelUrl.parse(url), options, failover_wait_seconds=settings.redis_failover_wait_seconds)
    return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **options))


def sync_redis(url: str, *, env: Source = None, **overrides: Any) -> redis.Redis:
    """A blocking Redis client (the cache sync's warm-up thread, the CLI's reports), as async_redis."""
    import redis

    settings = _resolved(env)
    options = {"decode_responses": True, **settings.redis_options(url), **overrides}
    if is_sentinel_url(url):
        return sync_master(SentinelUrl.parse(url), options, failover_wait_seconds=settings.redis_failover_wait_seconds)
    return redis.Redis.from_url(url, **options)


async def amqp_connect(url: str, *, env: Source = None, **kwargs: Any) -> AbstractConnection:
    """An aio-pika connection with the connect limit and, for amqps://, certificate verification; to the first
    live node when `url` lists several (eco2.amqp_cluster)."""
    addresses = amqp_addresses(url)
    return await connect_first_live(addresses, _amqp_arguments(addresses[0], env, kwargs))


async def amqp_connect_robust(url: str, *, env: Source = None, **kwargs: Any) -> AbstractRobustConnection:
    """As amqp_connect, reconnecting by itself (the local runner's long-lived connection), to another node of the
    list when its node goes."""
    import aio_pika

    addresses = amqp_addresses(url)
    arguments = _amqp_arguments(addresses[0], env, kwargs)
    if len(addresses) > 1:
        return await connect_robust_cluster(addresses, arguments)
    connection: AbstractRobustConnection = await aio_pika.connect_robust(addresses[0], **arguments)
    return connection


def _amqp_arguments(url: str, env: Source, given: dict[str, Any]) -> dict[str, Any]:
    return {**_resolved(env).amqp_options(url), **given}
