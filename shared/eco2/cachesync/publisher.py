"""Publishing on the cache-sync fanout exchanges from a synchronous program: pika's blocking connection, confirmed.

For the systems that feed the exchanges (the auth service on logout, the character admin when the catalog
changes) and for `eco2 catalog push` / `eco2 revoke`. It sends exactly what the replicas and the sync functions
read (eco2.cachesync.events: binary-mode CloudEvent headers, the JSON data), persistent and mandatory, and
returns only once the broker confirmed it: a message no queue took (nobody bound to the exchange) or one the
broker refused raises PublishFailed, as does a broker that blocks publishers (a memory or disk alarm) for longer
than the timeout. The asyncio processes never import this module (an import contract in pyproject.toml): they
publish over their own aio-pika connection (eco2.cachesync.replica.CacheSync.publish).

    with SyncPublisher.from_env(os.environ, source="/auth-service") as publisher:
        publisher.revoke_token(jti, user_id, expires_at)                 # one token (logout)
        publisher.revoke_user(user_id, time.time(), time.time() + 7 * 24 * 3600)   # every token issued so far
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions

from eco2.amqp_cluster import amqp_addresses
from eco2.cachesync.events import CatalogUpdated, Exchange, SyncEventType, TokenRevoked, amqp_message
from eco2.connections import ConnectionSettings
from eco2.env import env_float
from eco2.errors import Eco2Error

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_TIMEOUT_SECONDS = 10.0
# Heartbeats are what find a broker that vanished mid-publish (two missed: the connection is closed).
_HEARTBEAT_SECONDS = 10


class PublishFailed(Eco2Error):
    """The event was not confirmed: the broker is unreachable, refused it, routed it nowhere, or stayed blocked."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message, status=503)


@dataclass(frozen=True, slots=True)
class Published:
    """A confirmed publish: which event, on which exchange."""

    event_id: str
    event_type: SyncEventType
    exchange: str


@dataclass(frozen=True)
class PublisherSettings:
    amqp_url: str = DEFAULT_AMQP_URL
    blacklist_exchange: str = Exchange.BLACKLIST.value
    catalog_exchange: str = Exchange.CATALOG.value
    # Connect, handshake, and how long a blocked broker (alarm) may hold a publish.
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PublisherSettings:
        """The same variables the replicas read (AMQP_URL, ECO2_*_EXCHANGE, ECO2_TLS_*), and
        ECO2_PUBLISH_TIMEOUT_SECONDS."""
        return cls(
            amqp_url=env.get("AMQP_URL") or cls.amqp_url,
            blacklist_exchange=env.get("ECO2_BLACKLIST_EXCHANGE") or cls.blacklist_exchange,
            catalog_exchange=env.get("ECO2_CATALOG_EXCHANGE") or cls.catalog_exchange,
            timeout_seconds=env_float(env, "ECO2_PUBLISH_TIMEOUT_SECONDS", cls.timeout_seconds, minimum=0.1),
            connections=ConnectionSettings.from_env(env),
        )

    def exchange(self, kind: SyncEventType) -> str:
        return self.blacklist_exchange if kind is SyncEventType.TOKEN_REVOKED else self.catalog_exchange

    def parameters(self) -> list[pika.URLParameters]:
        """One set per node of AMQP_URL (a cluster lists several, eco2.amqp_cluster): pika tries them in turn."""
        return [self._node_parameters(url) for url in amqp_addresses(self.amqp_url)]

    def _node_parameters(self, url: str) -> pika.URLParameters:
        parameters = pika.URLParameters(url)
        parameters.socket_timeout = self.timeout_seconds
        parameters.stack_timeout = self.timeout_seconds
        parameters.blocked_connection_timeout = self.timeout_seconds
        parameters.connection_attempts = 1
        parameters.heartbeat = _HEARTBEAT_SECONDS
        parameters.client_properties = {"connection_name": "eco2 publisher"}
        if urlsplit(url).scheme == "amqps":
            parameters.ssl_options = pika.SSLOptions(self.connections.ssl_context(), parameters.host)
        return parameters


class SyncPublisher:
    """One blocking connection and a confirming channel; not thread-safe (pika's is not): one per thread."""

    def __init__(self, settings: PublisherSettings, *, source: str) -> None:
        self.settings = settings
        self.source = source
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, source: str) -> SyncPublisher:
        return cls(PublisherSettings.from_env(env), source=source)

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def revoke_token(self, jti: str, user_id: str, expires_at: float) -> Published:
        """Tell every replica that this token is revoked until it would expire (logout, or an operator)."""
        return self.publish(SyncEventType.TOKEN_REVOKED, TokenRevoked(jti=jti, user_id=user_id, expires_at=expires_at))

    def revoke_user(self, user_id: str, issued_before: float, expires_at: float) -> Published:
        """Tell every replica to refuse the user's tokens issued at or before `issued_before` (unix seconds),
        until `expires_at` (when the last of them would expire: issued_before + the longest token life)."""
        data = TokenRevoked(user_id=user_id, issued_before=issued_before, expires_at=expires_at)
        return self.publish(SyncEventType.TOKEN_REVOKED, data)

    def publish_catalog(self, version: int, characters: list[dict[str, Any]]) -> Published:
        """Offer a catalog version; every replica takes it if it is newer than the one it holds."""
        return self.publish(SyncEventType.CATALOG_UPDATED, CatalogUpdated(version=version, characters=characters))

    def publish(self, kind: SyncEventType, data: TokenRevoked | CatalogUpdated) -> Published:
        """Publish one event and wait for the broker's confirm; PublishFailed if it was not confirmed."""
        exchange = self.settings.exchange(kind)
        headers, body = amqp_message(kind, data, source=self.source)
        properties = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=headers,
            message_id=headers["cloudEvents:id"],
            timestamp=int(time.time()),
        )
        try:
            channel = self._open_channel()
            if exchange not in self._declared:
                # As the replicas and the RabbitmqSource declare it: a first publish before any of them works.
                channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
                self._declared.add(exchange)
            channel.basic_publish(exchange, "", body, properties, mandatory=True)
        except pika.exceptions.UnroutableError:
            raise PublishFailed(
                "unroutable", f"no queue is bound to the exchange {exchange!r}: the event reached nobody"
            ) from None
        except pika.exceptions.NackError:
            self.close()
            raise PublishFailed("nacked", f"the broker refused the event on {exchange!r}") from None
        except pika.exceptions.ConnectionBlockedTimeout:
            self.close()
            raise PublishFailed(
                "broker_blocked", f"the broker blocked publishers for over {self.settings.timeout_seconds:g} s"
            ) from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            reason = f"the broker could not be reached: {type(exc).__name__}"
            raise PublishFailed("broker_unreachable", reason) from None
        return Published(headers["cloudEvents:id"], kind, exchange)

    def _open_channel(self) -> Any:
        if self._connection is None or self._connection.is_closed:
            self._connection = pika.BlockingConnection(self.settings.parameters())
            self._channel = None
            self._declared.clear()
        if self._channel is None or self._channel.is_closed:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Closing a broken connection: nothing left to release.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
