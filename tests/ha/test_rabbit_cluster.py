"""The pack's AMQP clients on a real three-node RabbitMQ cluster (eco2_tools.ha): a memory alarm seen as a blocked
connection (readiness, `eco2 status`) and a publish that waits it out; a connection that moves to a live node
when its node is SIGKILLed, its quorum queue still there. The alarm is raised on the set's own node, never on
the machine's shared one. The node is killed last: the module's tests share the cluster."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, cast

import aio_pika
import pytest

from eco2.connections import amqp_connect, amqp_connect_robust
from eco2_tools.ha.cluster import HaSet
from eco2_tools.local.alarms import BLOCKED_PROBLEM, blocked
from eco2_tools.local.control import health
from eco2_tools.local.health import broker_problem
from eco2_tools.local.state import StateReporter
from eco2_tools.local.topology import Topology
from eco2_tools.manifests import Manifests
from tests.support import REDIS_TEST_URL, ROOT

pytestmark = pytest.mark.slow

DEADLINE = 30.0


async def _until(condition: object, what: str, seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not (condition() if callable(condition) else condition):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _published(channel: aio_pika.abc.AbstractChannel, body: bytes, queue: str) -> None:
    """Publish until confirmed: while the queue elects a new leader after its old one died, RabbitMQ nacks (the
    message was not stored), as a publisher that keeps its promise must expect."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=2), routing_key=queue)
            return
        except aio_pika.exceptions.DeliveryError:
            assert time.monotonic() < deadline, "the queue never took the message"
            await asyncio.sleep(0.2)


async def test_a_memory_alarm_blocks_the_connection_shows_in_readiness_and_status_and_a_publish_waits(
    rabbit_set: HaSet, tmp_path: Path
) -> None:
    rabbit = rabbit_set.rabbit
    connection = await amqp_connect(rabbit.url(1))
    reporter = StateReporter(tmp_path / "runner.json", Topology.plan(Manifests.load(ROOT), "ha-test"), REDIS_TEST_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(f"ha-alarm-{uuid.uuid4().hex[:8]}", exclusive=True)
        assert broker_problem(connection, channel) is None
        rabbit.raise_memory_alarm(1)
        publishes: list[asyncio.Task[Any]] = []
        try:
            # The node applies the new watermark on its next memory check, and blocks a connection only once it
            # publishes: publish until it is blocked (the ones before the alarm are simply confirmed).
            deadline = time.monotonic() + DEADLINE
            while not blocked(connection):
                assert time.monotonic() < deadline, "the connection was not blocked"
                message = aio_pika.Message(f"publish {len(publishes)}".encode())
                publishes.append(asyncio.create_task(channel.default_exchange.publish(message, queue.name)))
                await asyncio.sleep(0.2)
            assert broker_problem(connection, channel) == BLOCKED_PROBLEM
            await reporter.refresh(connection, channel)
            report = health(reporter.document({}, ready=True))
            assert report["broker"]["blocked"] is True
            assert report["healthy"] is False
            await asyncio.sleep(1.0)
            assert not publishes[-1].done()  # neither failed nor confirmed while the alarm lasts
        finally:
            rabbit.clear_memory_alarm(1)
        await _until(lambda: not blocked(connection), "the connection was not unblocked")
        await asyncio.wait_for(asyncio.gather(*publishes), DEADLINE)  # every publish confirmed once it cleared
        assert broker_problem(connection, channel) is None
        bodies = [(await queue.get(timeout=5)).body for _ in publishes]
        assert bodies == [f"publish {n}".encode() for n in range(len(publishes))]
    finally:
        await reporter.aclose()
        await connection.close()


async def test_a_cluster_connection_moves_to_a_live_node_when_its_node_is_killed(rabbit_set: HaSet) -> None:
    rabbit = rabbit_set.rabbit
    connection = await amqp_connect_robust(rabbit.urls(), reconnect_interval=0.5)
    try:
        assert cast(Any, connection).url.port == rabbit.port(0)  # the first node listed
        channel = await connection.channel(publisher_confirms=True)
        name = f"ha-quorum-{uuid.uuid4().hex[:8]}"
        queue = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(aio_pika.Message(b"before", delivery_mode=2), routing_key=name)
        assert rabbit.kill_node(0)
        await _until(
            lambda: connection.connected.is_set() and cast(Any, connection).url.port != rabbit.port(0), "no reconnect"
        )
        await _until(lambda: not channel.is_closed, "the channel was not restored")
        await _published(channel, b"after", name)
        bodies = [(await queue.get(timeout=10, no_ack=True)).body for _ in range(2)]
        assert bodies == [b"before", b"after"]  # the quorum queue kept what the dead node had confirmed
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
