"""The runner's dispatcher stopped in the middle of a delivery: it finishes it, acks it, and takes nothing new."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eco2_tools.local.client import runner_session
from eco2_tools.local.dispatcher import Endpoint, TriggerConsumer
from eco2_tools.local.messages import to_message
from eco2_tools.local.metrics import RunnerMetrics
from eco2_tools.local.replicas import free_port
from eco2_tools.local.topology import Topology
from eco2_tools.manifests import Manifests
from tests.benchmarks.dispatch import manifest_root, ping
from tests.support import wait_for

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SUBSCRIBER_SECONDS = 1.0


class SlowSubscriber:
    """A subscriber that takes a second per event and counts what it was sent and what it finished."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: list[str] = []

    async def receive(self, request: Request) -> Response:
        event_id = request.headers.get("ce-id", "")
        self.started.append(event_id)
        await asyncio.sleep(SUBSCRIBER_SECONDS)
        self.finished.append(event_id)
        return Response(status_code=202)


class _Embedded(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
async def subscriber() -> AsyncIterator[tuple[SlowSubscriber, str]]:
    sink = SlowSubscriber()
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", sink.receive, methods=["POST"])]),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    server = _Embedded(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield sink, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_stop_finishes_and_acks_the_delivery_in_flight(
    subscriber: tuple[SlowSubscriber, str], tmp_path: Path
) -> None:
    sink, url = subscriber
    topology = Topology.plan(Manifests.load(manifest_root(tmp_path, "classic")), f"drain-{uuid.uuid4().hex[:12]}")
    plan = topology.triggers["bench"]
    connection = await aio_pika.connect(AMQP_URL)
    try:
        exchange = await topology.declare(await connection.channel(), None)
        publisher = await connection.channel(publisher_confirms=True)
        broker = await publisher.get_exchange(exchange.name)
        consumer_channel = await connection.channel()
        metrics = RunnerMetrics()
        async with runner_session() as http:

            async def endpoints(service: str) -> Endpoint:
                return Endpoint(url, lambda: None)

            consumer = TriggerConsumer(
                plan,
                channel=consumer_channel,
                publisher=publisher,
                broker_exchange=broker,
                endpoints=endpoints,
                http=http,
                metrics=metrics,
            )
            await consumer.start()
            await broker.publish(to_message(ping("drain", 1)), routing_key="")

            async def in_flight() -> bool:
                return len(sink.started) == 1

            await wait_for(in_flight, timeout=10, what="the delivery to reach the subscriber")
            stopping = time.monotonic()
            await consumer.stop(grace_seconds=10)
            assert time.monotonic() - stopping < 5
            # Published after the stop: the consumer is cancelled, so it stays in the queue for the next runner.
            await broker.publish(to_message(ping("drain", 2)), routing_key="")
            await consumer_channel.close()  # an unacked message would go back to the queue here

        assert sink.finished == ["drain-1"]
        assert sink.started == ["drain-1"]
        acked = metrics.registry.get_sample_value(
            "eco2_runner_deliveries_total", {"trigger": "bench", "outcome": "acked"}
        )
        assert acked == 1
        check = await connection.channel()
        queue = await check.declare_queue(plan.queue, passive=True)
        assert queue.declaration_result.message_count == 1  # only the one published after the stop
    finally:
        await _delete(connection, topology)
        await connection.close()


async def _delete(connection: aio_pika.abc.AbstractConnection, topology: Topology) -> None:
    channel = await connection.channel()
    for plan in topology.triggers.values():
        with contextlib.suppress(Exception):
            await channel.queue_delete(plan.queue)
    with contextlib.suppress(Exception):
        await channel.exchange_delete(topology.exchange)
