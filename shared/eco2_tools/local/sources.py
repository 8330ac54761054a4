"""RabbitmqSources run locally: each source's exchange consumed through a queue of the runner's, every message
POSTed to the sink (the broker ingress) as a binary-mode CloudEvent, acked after a 2xx.

As the eventing-rabbitmq source adapter does: a message carrying CloudEvent attributes (`cloudEvents:<name>`
or `cloudEvents_<name>` headers) keeps them; any other message becomes a `dev.knative.rabbitmq.event` with
the message id. A failed POST is retried with the source's delivery (retry, backoffPolicy, backoffDelay);
after the last retry the message is rejected (dropped, as the adapter drops it without a dead-letter sink).
The sink's reply is ignored. Prefetch = the source's parallelism: that many messages in flight, no more.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

import aiohttp
from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from eco2.cachesync.events import attributes_of
from eco2.sender_auth import SenderCredential
from eco2_tools.local.client import phase_timeout, request_status
from eco2_tools.local.topology import source_queue
from eco2_tools.manifests import Manifests
from eco2_tools.manifests.rabbitmq_source import RabbitmqSourceSpec, rabbitmq_sources

log = logging.getLogger("eco2_tools.local.sources")

PLAIN_MESSAGE_TYPE = "dev.knative.rabbitmq.event"
POST_TIMEOUT_SECONDS = 10.0
POST_TIMEOUT = phase_timeout(POST_TIMEOUT_SECONDS)


def cloudevent_headers(message: AbstractIncomingMessage, source: RabbitmqSourceSpec) -> dict[str, str]:
    """The binary-mode HTTP headers of the CloudEvent a source makes of one message."""
    attributes = attributes_of(message.headers)
    attributes.setdefault("specversion", "1.0")
    attributes.setdefault("type", PLAIN_MESSAGE_TYPE)
    attributes.setdefault("source", f"/apis/v1/namespaces/eco2/rabbitmqsources/{source.name}")
    attributes.setdefault("id", message.message_id or str(uuid.uuid4()))
    headers = {f"ce-{name}": value for name, value in attributes.items() if name != "datacontenttype"}
    headers["content-type"] = attributes.get("datacontenttype") or message.content_type or "application/json"
    return headers


@dataclass
class SourceConsumer:
    spec: RabbitmqSourceSpec
    channel: AbstractChannel
    sink_url: str
    http: aiohttp.ClientSession
    queue_name: str
    credential: dict[str, str] = field(default_factory=dict)  # the Authorization header the ingress asks for
    delivered: int = 0
    dropped: int = 0
    _tag: str | None = field(default=None, init=False)

    async def start(self) -> None:
        await self.channel.set_qos(prefetch_count=self.spec.parallelism)
        exchange = await self.channel.declare_exchange(self.spec.exchange, ExchangeType.FANOUT, durable=True)
        queue = await self.channel.declare_queue(self.queue_name, durable=True)
        await queue.bind(exchange)
        self._tag = await queue.consume(self._on_message)

    async def stop(self) -> None:
        await self.channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        headers = cloudevent_headers(message, self.spec) | self.credential
        delivery = self.spec.delivery
        for attempt in range(delivery.retry + 1):
            if attempt:
                await asyncio.sleep(delivery.backoff(attempt))
            if await self._post(headers, message.body):
                self.delivered += 1
                await message.ack()
                return
        self.dropped += 1
        log.warning("source gave up on a message", extra={"fields": {"source": self.spec.name, "id": headers["ce-id"]}})
        await message.reject(requeue=False)

    async def _post(self, headers: dict[str, str], body: bytes) -> bool:
        try:
            status = await request_status(
                self.http, "POST", self.sink_url, headers=headers, data=body, timeout=POST_TIMEOUT
            )
        except (aiohttp.ClientError, TimeoutError):
            return False
        return 200 <= status < 300  # the reply, if any, is ignored


async def start_sources(
    manifests: Manifests,
    connection: AbstractConnection,
    sink_url: str,
    http: aiohttp.ClientSession,
    prefix: str,
    event_token: str | None = None,
) -> list[SourceConsumer]:
    """One consumer per RabbitmqSource of the manifests, each on its own channel and its own durable queue; each
    presents the pack's sender credential to the ingress, as a source's OIDC identity does to the broker."""
    credential = SenderCredential(token=event_token).headers()
    consumers: list[SourceConsumer] = []
    for spec in rabbitmq_sources(manifests).values():
        queue = source_queue(prefix, spec.name)
        consumer = SourceConsumer(spec, await connection.channel(), sink_url, http, queue, credential)
        await consumer.start()
        consumers.append(consumer)
    return consumers
