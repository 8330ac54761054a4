"""AMQP to a RabbitMQ cluster: AMQP_URL may list its nodes, and a connection moves to a live one when its node goes.

    AMQP_URL=amqp://user:pass@rabbit-0:5672/,amqp://user:pass@rabbit-1:5672/,amqp://user:pass@rabbit-2:5672/

Full URLs, comma-separated (each may carry its own credentials and query; one scheme for all). A connection
tries them in the order given; a reconnecting connection (the runner's) tries the next node after each lost
connection or failed attempt, so a SIGKILLed node costs one reconnect interval, not an outage. The queues are
quorum queues, replicated over the cluster, so the node a client lands on does not matter. In Kubernetes one
Service address in front of the cluster's pods does the same; the list is for brokers without one.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eco2.env import SettingsError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection, AbstractRobustConnection


def amqp_addresses(url: str) -> list[str]:
    """The node URLs of an AMQP_URL (one for a single node); a SettingsError names what is wrong."""
    addresses = [address.strip() for address in url.split(",") if address.strip()]
    if not addresses:
        raise SettingsError("AMQP_URL is empty")
    schemes = {urlsplit(address).scheme for address in addresses}
    if not schemes <= {"amqp", "amqps"} or len(schemes) != 1:
        raise SettingsError(f"AMQP_URL lists amqp:// or amqps:// URLs of one scheme, got {sorted(schemes)}")
    return addresses


def kombu_url(url: str) -> str:
    """The same nodes as Celery's broker URL: kombu fails over along a `;`-separated list."""
    return ";".join(amqp_addresses(url))


def first_address(url: str) -> str:
    return amqp_addresses(url)[0]


async def connect_first_live(addresses: Sequence[str], options: dict[str, Any]) -> AbstractConnection:
    """A plain connection to the first node that answers; the last node's error when none does."""
    import aio_pika

    failure: BaseException | None = None
    for address in addresses:
        try:
            connection: AbstractConnection = await aio_pika.connect(address, **options)
            return connection
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPConnectionError) as error:
            failure = error
    assert failure is not None
    raise failure


async def connect_robust_cluster(addresses: Sequence[str], options: dict[str, Any]) -> AbstractRobustConnection:
    """A reconnecting connection over the cluster's nodes, first made to the first node that answers."""
    import aio_pika

    options = dict(options)
    timeout = options.pop("timeout", None)
    failure: BaseException | None = None
    for start in range(len(addresses)):
        connection = _cluster_connection_class()(_rotated(addresses, start), **options)
        try:
            await connection.connect(timeout=timeout)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPConnectionError) as error:
            failure = error
            await connection.close()
            continue
        robust: AbstractRobustConnection = connection
        return robust
    assert failure is not None
    raise failure


def _rotated(addresses: Sequence[str], start: int) -> list[str]:
    return [*addresses[start:], *addresses[:start]]


@functools.cache
def _cluster_connection_class() -> Any:
    """aio-pika's RobustConnection (channels, queues and consumers restored after a reconnect) that moves to the
    next node whenever a connection closes or an attempt fails: each of those reaches `_on_connection_close`."""
    from aio_pika import RobustConnection
    from yarl import URL

    class ClusterRobustConnection(RobustConnection):
        def __init__(self, addresses: Sequence[str], **kwargs: Any) -> None:
            super().__init__(URL(addresses[0]), **kwargs)
            self._nodes = [URL(address) for address in addresses]
            self._node = 0

        async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
            self._node = (self._node + 1) % len(self._nodes)
            self.url = self._nodes[self._node]
            await super()._on_connection_close(closing)

    return ClusterRobustConnection
