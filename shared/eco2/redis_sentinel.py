"""Redis behind Sentinel: the `redis+sentinel://` URL form and clients that follow the master through a failover.

    redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/<master name>[/<db>]
        [?sentinel_password=...&sentinel_username=...]

`rediss+sentinel://` is the same over TLS (to the sentinels and to the master, verified as `rediss://`). The
user and password are the master's; the sentinels' own, when they require one, go in the query.

Every client made here asks the sentinels for the master's address on each new connection, and turns a
READONLY reply (it is talking to a demoted master) or a lost connection into a reconnect through the sentinels,
retried for about ECO2_REDIS_FAILOVER_WAIT_SECONDS: a failover (typically a few seconds) is a slow command to
the caller, not a failed job.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from eco2.env import SettingsError

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
# Backoff between attempts while the sentinels elect a new master: short, since a promotion is announced at once.
_RETRY_BASE_SECONDS = 0.05
_RETRY_CAP_SECONDS = 0.5
# Options that belong to the client object, not to each connection of its pool.
_CLIENT_OPTIONS = ("single_connection_client",)


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        if scheme not in SENTINEL_SCHEMES:
            raise SettingsError(f"not a Sentinel URL (redis+sentinel://...): {scheme!r}")
        parts = urlsplit(f"{scheme}://{rest}")
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, _, password = credentials.partition(":")
        path = [piece for piece in parts.path.split("/") if piece]
        if not path:
            raise SettingsError("a Sentinel URL names its master: redis+sentinel://host:26379/<master name>/<db>")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        return cls(
            sentinels=tuple(_address(host) for host in hosts.split(",") if host),
            master=unquote(path[0]),
            db=_db(path[1] if len(path) > 1 else "0"),
            tls=SENTINEL_SCHEMES[scheme],
            username=unquote(username) or None,
            password=unquote(password) or None,
            sentinel_username=query.get("sentinel_username"),
            sentinel_password=query.get("sentinel_password"),
        )

    def describe(self) -> str:
        """The URL without its passwords (for logs and `eco2 status`)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{self.master}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def _address(host: str) -> tuple[str, int]:
    name, _, port = host.rpartition(":") if ":" in host else (host, "", str(DEFAULT_SENTINEL_PORT))
    try:
        return name.strip("[]"), int(port)
    except ValueError:
        raise SettingsError(f"a Sentinel address is host:port, got {host!r}") from None


def _db(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"a Sentinel URL's database is a number, got {raw!r}") from None


def failover_retries(wait_seconds: float) -> int:
    """How many reconnects span `wait_seconds` at the backoff's cap (the first few are shorter)."""
    return max(3, math.ceil(wait_seconds / _RETRY_CAP_SECONDS))


def _split(url: SentinelUrl, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The options for the sentinels' connections, for the master's connections, and for the client object."""
    client = {name: options[name] for name in _CLIENT_OPTIONS if name in options}
    master = {name: value for name, value in options.items() if name not in _CLIENT_OPTIONS}
    master.update(db=url.db, username=url.username, password=url.password)
    transport = {name: value for name, value in master.items() if name.startswith(("socket_", "ssl"))}
    sentinel = {**transport, "username": url.sentinel_username, "password": url.sentinel_password}
    if url.tls:
        sentinel["ssl"] = True
    return sentinel, master, client


def async_master(url: SentinelUrl, options: Mapping[str, Any], *, failover_wait_seconds: float) -> aioredis.Redis:
    """An asyncio client of the master; `max_connections` with `timeout` in `options` bound its pool (blocking)."""
    from redis.asyncio.retry import Retry
    from redis.asyncio.sentinel import Sentinel

    sentinel_options, master, client = _split(url, options)
    master["retry"] = Retry(_backoff(), failover_retries(failover_wait_seconds))
    master["connection_class"] = _async_classes().connections[url.tls]
    if "timeout" in master:
        master["connection_pool_class"] = _async_classes().blocking_pool
    else:
        master.pop("max_connections", None)
    manager = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    master_client: aioredis.Redis = manager.master_for(url.master, redis_class=_async_classes().client, **master)
    if not client.get("single_connection_client"):
        return master_client
    single: aioredis.Redis = _async_classes().client(
        connection_pool=master_client.connection_pool, single_connection_client=True
    )
    single.auto_close_connection_pool = True
    return single


def sync_master(url: SentinelUrl, options: Mapping[str, Any], *, failover_wait_seconds: float) -> redis.Redis:
    """A blocking client of the master, as async_master."""
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    sentinel_options, master, _ = _split(url, options)
    master["retry"] = Retry(_backoff(), failover_retries(failover_wait_seconds))
    master["connection_class"] = _sync_classes().connections[url.tls]
    manager = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        url.master, redis_class=_sync_classes().client, **master
    )
    return client


def _backoff() -> Any:
    from redis.backoff import ExponentialBackoff

    return ExponentialBackoff(cap=_RETRY_CAP_SECONDS, base=_RETRY_BASE_SECONDS)


@dataclass(frozen=True)
class _Classes:
    client: Any  # closes the sentinels' own connections with its pool's
    connections: dict[bool, Any]  # by TLS
    blocking_pool: Any = None


# redis-py's Sentinel connections reconnect a dropped connection (on its next command) to the address they last
# had, the dead master, retrying there until the retries run out; these ask the sentinels on every attempt. One
# attempt per reconnect: the command's own retry around it spans the failover, without a retry inside a retry.


@functools.cache
def _async_classes() -> _Classes:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import BlockingConnectionPool, SSLConnection
    from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection

    class FailoverConnection(SentinelManagedConnection):
        async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
            if retry_socket_connect and not self.is_connected:
                await self._connect_retry()  # type: ignore[no-untyped-call]
                return
            await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    class FailoverSSLConnection(FailoverConnection, SSLConnection):
        pass

    class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
        """Waits for a free connection (as BlockingConnectionPool) instead of failing at the bound."""

    class SentinelMasterClient(aioredis.Redis):
        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            closes_pool = self.auto_close_connection_pool if close_connection_pool is None else close_connection_pool
            await super().aclose(close_connection_pool)
            if closes_pool:
                await cast(Any, self.connection_pool).sentinel_manager.aclose()

    return _Classes(
        SentinelMasterClient, {False: FailoverConnection, True: FailoverSSLConnection}, BlockingSentinelConnectionPool
    )


@functools.cache
def _sync_classes() -> _Classes:
    import redis
    from redis.connection import SSLConnection
    from redis.sentinel import SentinelManagedConnection

    class FailoverConnection(SentinelManagedConnection):
        def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
            if retry_socket_connect and not self.is_connected:
                self._connect_retry()  # type: ignore[no-untyped-call]
                return
            super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)

    class FailoverSSLConnection(FailoverConnection, SSLConnection):
        pass

    class SentinelMasterClient(redis.Redis):
        def close(self) -> None:
            closes_pool = self.auto_close_connection_pool
            super().close()
            if closes_pool:
                for sentinel in cast(Any, self.connection_pool).sentinel_manager.sentinels:
                    sentinel.close()

    return _Classes(SentinelMasterClient, {False: FailoverConnection, True: FailoverSSLConnection})
