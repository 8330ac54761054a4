"""RabbitmqSources: read from the manifests (the CRD check is tests/manifests), run by the local runner."""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aiohttp import web
from multidict import CIMultiDict

from eco2.cachesync.events import Exchange, SyncEventType, TokenRevoked
from eco2_tools.local.client import runner_session
from eco2_tools.local.sources import PLAIN_MESSAGE_TYPE, SourceConsumer
from eco2_tools.manifests import ManifestError, Manifests
from eco2_tools.manifests.rabbitmq_source import RabbitmqSourceSpec, SourceDelivery, rabbitmq_sources
from tests.cachesync.support import AMQP_URL, publish
from tests.support import ROOT, free_port, http_server, wait_for


def test_one_source_per_exchange_into_the_broker() -> None:
    sources = rabbitmq_sources(Manifests.load(ROOT))
    assert {s.exchange for s in sources.values()} == {Exchange.BLACKLIST.value, Exchange.CATALOG.value}
    for source in sources.values():
        assert source.sink_broker == "eco2"
        assert source.delivery.retry == 5
        assert source.delivery.backoff(1) == pytest.approx(0.4)  # 200ms * 2^1
    assert sources["character-catalog"].parallelism == 1


def test_a_source_into_another_broker_is_a_manifest_error(tmp_path: Path) -> None:
    for directory in ("knative", "eventing"):
        shutil.copytree(ROOT / directory, tmp_path / directory)
    path = tmp_path / "eventing" / "sources.yaml"
    path.write_text(path.read_text().replace("      name: eco2\n", "      name: elsewhere\n", 1))
    with pytest.raises(ManifestError, match="elsewhere"):
        rabbitmq_sources(Manifests.load(tmp_path))


@dataclass(frozen=True)
class Received:
    headers: CIMultiDict[str]
    body: bytes


class Sink:
    """The broker ingress's stand-in: answers the queued statuses in turn (then 202), records what came."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[Received] = []

    async def answer(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.headers.copy(), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 202
        # A reply the sink sends back: a source must ignore it.
        return web.Response(status=status, headers={"ce-type": "eco2.reply", "ce-id": "r"}, body=b"{}")


@pytest.fixture
async def channel() -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield await connection.channel()


def spec(exchange: str) -> RabbitmqSourceSpec:
    delivery = SourceDelivery(retry=3, backoff_policy="exponential", backoff_delay_seconds=0.01)
    return RabbitmqSourceSpec("test", exchange, "unused", 2, delivery, "eco2")


@contextlib.asynccontextmanager
async def running_source(
    channel: aio_pika.abc.AbstractChannel, sink_url: str, exchange: str
) -> AsyncIterator[SourceConsumer]:
    """A source consuming `exchange` into the sink at `sink_url`; its queue and exchange deleted after."""
    async with runner_session() as http:
        consumer = SourceConsumer(spec(exchange), channel, sink_url, http, f"{exchange}.source")
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()
            await _delete(exchange)


async def test_a_message_becomes_a_binary_cloudevent_retried_until_the_sink_takes_it(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = f"test-source-{uuid.uuid4().hex[:8]}"
    sink = Sink([503, 500])
    async with http_server(sink.answer) as url, running_source(channel, f"{url}/", exchange) as consumer:
        revoked = TokenRevoked(jti="j1", user_id="u1", expires_at=2e9)
        await publish(exchange, SyncEventType.TOKEN_REVOKED, revoked)
        await wait_for(lambda: _done(consumer, 1), timeout=5, what="delivered")
        assert len(sink.received) == 3, "two failures retried, then taken"
        sent = sink.received[-1]
        assert sent.headers["ce-type"] == SyncEventType.TOKEN_REVOKED
        assert sent.headers["ce-source"] == "/tests/cachesync"
        assert json.loads(sent.body) == revoked.model_dump(exclude_none=True)  # as published (amqp_message)
        assert len({r.headers["ce-id"] for r in sink.received}) == 1, "one event, the same id on every attempt"


async def test_a_plain_message_gets_the_sources_type_and_a_hopeless_one_is_dropped(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = f"test-source-{uuid.uuid4().hex[:8]}"
    sink = Sink([400, 400, 400, 400, 202])
    async with http_server(sink.answer) as url, running_source(channel, f"{url}/", exchange) as consumer:
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        await target.publish(aio_pika.Message(b'{"a": 1}', message_id="m-1"), "")
        await wait_for(lambda: _dropped(consumer), timeout=5, what="dropped after 1 + 3 attempts")
        assert [r.headers["ce-type"] for r in sink.received] == [PLAIN_MESSAGE_TYPE] * 4
        assert sink.received[0].headers["ce-id"] == "m-1"
        await target.publish(aio_pika.Message(b"{}"), "")
        await wait_for(lambda: _done(consumer, 1), timeout=5, what="the next message delivered")


async def test_a_sink_that_is_not_listening_is_a_failed_post_retried_then_dropped(
    channel: aio_pika.abc.AbstractChannel,
) -> None:
    exchange = f"test-source-{uuid.uuid4().hex[:8]}"
    async with running_source(channel, f"http://127.0.0.1:{free_port()}/", exchange) as consumer:
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        await target.publish(aio_pika.Message(b"{}", message_id="m-2"), "")
        await wait_for(lambda: _dropped(consumer), timeout=5, what="dropped after 1 + 3 refused attempts")
        assert consumer.delivered == 0


async def _done(consumer: SourceConsumer, count: int) -> bool:
    return consumer.delivered >= count


async def _dropped(consumer: SourceConsumer) -> bool:
    return consumer.dropped == 1


async def _delete(exchange: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(f"{exchange}.source")
        await channel.exchange_delete(exchange)
