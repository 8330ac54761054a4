"""The runner when the broker is in trouble: no hot redelivery loop, a delivery limit that ends at the
dead-letter sink, the generation-1 queues drained, readiness and status that tell an outage, and the dead
letters and housekeeping failures one can see. Real RabbitMQ and Redis throughout."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractQueue
from cloudevents.http import CloudEvent

from eco2_tools.local import control
from eco2_tools.local.messages import to_message
from eco2_tools.local.runner import LocalPack
from eco2_tools.local.topology import TopologyConflict
from tests.local.conftest import AMQP_URL, RunnerProcess, delete_topology, options
from tests.local.test_runner import (
    FLAKY,
    child_settings,
    dead_letter,
    flaky_manifests,
    post_event,
    send,
    until_ready,
)
from tests.support import wait_for


def echo_manifests(target: Path, **settings: Any) -> Path:
    """The flaky Trigger's manifests with the `echo` fixture behind it: mode `reply` answers with test.echoed."""
    root = flaky_manifests(target, filter_type="test.echo", **settings)
    service = root / "knative" / "flaky.yaml"
    service.write_text(service.read_text().replace("- flaky\n", "- echo\n", 1))
    return root


def publisher_of(pack: LocalPack) -> AbstractChannel:
    publisher = pack.publisher
    assert publisher is not None
    return publisher


def deliveries(pack: LocalPack, trigger: str = "flaky") -> float:
    """Messages the trigger's dispatcher took from its queue, redeliveries included."""
    return pack.metrics.registry.get_sample_value("eco2_runner_hop_seconds_count", {"trigger": trigger}) or 0.0


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    yield await connection.channel()
    await connection.close()


async def reply_queue(channel: AbstractChannel, pack: LocalPack) -> AbstractQueue:
    """A throwaway queue on the pack's broker exchange that catches the echo replies."""
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(pack.topology.exchange, arguments={"x-match": "all", "type": "test.echoed"})
    return queue


async def publish_direct(channel: AbstractChannel, pack: LocalPack, data: dict[str, Any]) -> str:
    """Into the broker exchange, past the ingress (which cannot publish while the runner's publisher is down)."""
    event_id = uuid.uuid4().hex
    event = CloudEvent({"type": "test.echo", "source": "/test", "id": event_id, "subject": "job-x"}, data)
    exchange = await channel.get_exchange(pack.topology.exchange)
    await exchange.publish(to_message(event), routing_key="")
    return event_id


async def test_a_reply_that_cannot_be_published_is_not_redelivered_in_a_hot_loop(
    start_pack: Callable[..., Any], tmp_path: Path, amqp: AbstractChannel
) -> None:
    pack = await start_pack(echo_manifests(tmp_path / "m", parallelism=4))
    replies = await reply_queue(amqp, pack)
    publisher = publisher_of(pack)
    await publisher.close()  # the broker is back, the publisher channel is not (yet)
    ids = [await publish_direct(amqp, pack, {"mode": "reply"}) for _ in range(4)]

    async def all_delivered_once() -> bool:
        return deliveries(pack) >= len(ids)

    await wait_for(all_delivered_once, timeout=30, what="the first deliveries")
    await asyncio.sleep(3.0)  # the outage: every reply publish fails for 3 s
    taken_during_outage = deliveries(pack)
    await publisher.reopen()
    got: set[str] = set()

    async def every_reply() -> bool:
        while (message := await replies.get(no_ack=True, fail=False)) is not None:
            got.add(str((message.headers or {}).get("id", "")))
        return got >= {f"re-{i}" for i in ids}

    await wait_for(every_reply, timeout=60, what="every reply published after the outage")
    # The old dispatcher requeued at once: hundreds of redeliveries in 3 s. Now a pause that grows.
    assert taken_during_outage <= 3 * len(ids), f"{taken_during_outage} deliveries of {len(ids)} messages in 3 s"
    assert deliveries(pack) <= 4 * len(ids)
    assert pack.metrics.registry.get_sample_value(
        "eco2_runner_deliveries_total", {"trigger": "flaky", "outcome": "replied"}
    ) == len(ids)


async def test_a_message_that_never_gets_an_outcome_reaches_the_dead_letter_sink(
    start_pack: Callable[..., Any], tmp_path: Path, amqp: AbstractChannel, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(echo_manifests(tmp_path / "m"), delivery_limit=1, pause_max=0.5)
    await publisher_of(pack).close()  # for good: no reply of this pack can be published
    event_id = await publish_direct(amqp, pack, {"mode": "reply"})
    letter = await wait_for(lambda: dead_letter(redis_client, event_id), timeout=30, what="the dead letter")
    assert "delivery_limit" in letter["knativeerrordata"]
    assert letter["knativeerrorcode"] == "0"
    assert letter["knativeerrordest"] == "service:flaky"
    assert deliveries(pack) == 2  # the first delivery and one more, as x-delivery-limit 1 allows


async def test_messages_left_in_generation_1_queues_are_moved_and_the_queues_removed(
    tmp_path: Path, amqp: AbstractChannel, redis_client: aioredis.Redis
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    pack = LocalPack(options(tmp_path, flaky_manifests(tmp_path / "m", retry=1, backoff="PT1S"), prefix))
    plan = pack.topology.triggers["flaky"]
    legacy, legacy_retry = plan.legacy_queue, plan.retry_queue(1, legacy=True)
    # As the old runner declared them: no delivery limit; its delay queue dead-letters into the old queue.
    await amqp.declare_queue(legacy, durable=True, arguments={"x-queue-type": "quorum"})
    retry_arguments: dict[str, Any] = {"x-queue-type": "classic", "x-message-ttl": 1000}
    retry_arguments |= {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": legacy}
    await amqp.declare_queue(legacy_retry, durable=True, arguments=retry_arguments)
    attributes = {"type": "test.flaky", "source": "/test"}
    events = [CloudEvent({**attributes, "id": uuid.uuid4().hex}, {"mode": "ok"}) for _ in range(2)]
    await amqp.default_exchange.publish(to_message(events[0]), routing_key=legacy)
    await amqp.default_exchange.publish(to_message(events[1], attempt=1), routing_key=legacy_retry)
    try:
        await pack.start()

        async def both_done() -> bool:
            return all([await redis_client.exists(f"{FLAKY}:done:{e['id']}") for e in events])

        await wait_for(both_done, timeout=30, what="the moved events")
        async with await aio_pika.connect(AMQP_URL) as connection:
            for name in (legacy, legacy_retry):
                with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                    await (await connection.channel()).declare_queue(name, passive=True)
    finally:
        await pack.stop()
        await delete_topology(pack)
        for name in (legacy, legacy_retry):
            await amqp.queue_delete(name)


async def test_a_queue_declared_with_other_arguments_stops_the_start_with_what_to_do(
    tmp_path: Path, amqp: AbstractChannel
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    pack = LocalPack(options(tmp_path, flaky_manifests(tmp_path / "m"), prefix))
    queue = pack.topology.triggers["flaky"].queue
    await amqp.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"})  # another queueType
    try:
        with pytest.raises(TopologyConflict, match=f"rabbitmqctl delete_queue {queue}"):
            await pack.start()
    finally:
        await pack.stop()
        await delete_topology(pack)


async def test_status_lists_recorded_dead_letters_by_function_and_reason(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", retry=0))
    poison = [await send(pack, "test.flaky", {"mode": "poison"}) for _ in range(2)]
    failed = await send(pack, "test.flaky", {"mode": "fail"})

    async def all_recorded() -> bool:
        return all([await dead_letter(redis_client, i) is not None for i in [*poison, failed]])

    await wait_for(all_recorded, timeout=30, what="the dead letters")
    # The dead-letter queue is drained into Redis at once: its depth is 0, the letters are in the stream.
    assert control.status(pack.options, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    letters = report["dead_letters"]
    assert letters["total"] == 3
    assert [(g["function"], g["reason"], g["count"]) for g in letters["groups"]] == [
        ("flaky", "HTTP 503 unavailable", 1),  # newest first
        ("flaky", "HTTP 422 invalid_data", 2),
    ]
    assert letters["groups"][0]["newest_event_id"] == failed
    assert control.status(pack.options, as_json=False) == 0
    text = capsys.readouterr().out
    assert "dead letters: 3 recorded" in text
    assert "HTTP 422 invalid_data" in text


def close_runner_connection(prefix: str) -> None:
    """Close the runner's AMQP connection from the broker side, as a RabbitMQ restart would."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "client_properties", "-q"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    pids = [line.split("\t", 1)[0] for line in listed.stdout.splitlines() if f'"eco2-runner {prefix}"' in line]
    assert len(pids) == 1, f"the runner's connection ({prefix}) in: {listed.stdout[:500]}"
    command = ["rabbitmqctl", "close_connection", pids[0], "test outage"]
    subprocess.run(command, check=True, capture_output=True, timeout=30)


async def test_readiness_and_status_tell_a_broker_outage(
    start_pack: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m"))
    async with httpx.AsyncClient(base_url=pack.ingress_url) as http:

        async def readiness(expected: int) -> bool:
            return (await http.get("/readyz")).status_code == expected

        await wait_for(lambda: readiness(200), timeout=10, what="the ingress ready")
        close_runner_connection(pack.options.prefix)
        await wait_for(lambda: readiness(503), timeout=10, what="/readyz 503 during the outage")
        assert (await http.get("/healthz")).status_code == 200  # alive all the same

        async def state_says_unreachable() -> bool:
            state = json.loads(pack.options.state_path.read_text())
            return state["broker_health"]["reachable"] is False and state["queues_read"]["ok"] is False

        await wait_for(state_says_unreachable, timeout=10, what="the state to say the broker is unreachable")
        control.status(pack.options, as_json=True)
        report = json.loads(capsys.readouterr().out)
        assert report["running"] is True
        assert report["healthy"] is False
        assert report["broker"]["reachable"] is False
        assert report["broker"]["error"]
        assert report["redis"]["reachable"] is True
        assert report["queues_read"]["ok"] is False
        assert report["queues_read"]["error"]
        assert report["state_age_seconds"] < 5  # still written during the outage, not frozen
        await wait_for(lambda: readiness(200), timeout=30, what="/readyz 200 after the reconnect")

    async def state_says_reachable() -> bool:
        state = json.loads(pack.options.state_path.read_text())
        return state["broker_health"]["reachable"] is True and state["queues_read"]["ok"] is True

    await wait_for(state_says_reachable, timeout=10, what="the state to say the broker is back")


async def test_housekeeping_failures_are_logged_and_it_keeps_going(
    start_pack: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m"))
    calls = 0

    async def broken_reap() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("reap failed on purpose")

    pack.pools["flaky"].reap_idle = broken_reap
    caplog.set_level(logging.ERROR, logger="eco2_tools.local.runner")

    async def logged_twice() -> bool:
        failures = [r for r in caplog.records if r.exc_info and "reap failed on purpose" in str(r.exc_info[1])]
        return len(failures) >= 2

    await wait_for(logged_twice, timeout=10, what="the housekeeping failure in the log, twice")
    assert calls >= 2


async def test_eco2_up_logs_why_it_retries_an_event(runner_process: RunnerProcess, tmp_path: Path) -> None:
    manifests = flaky_manifests(tmp_path / "m", retry=2, backoff="PT0.2S")
    prefix, ingress_port, env = child_settings(tmp_path)
    runner = runner_process(manifests, env)
    log = tmp_path / "runner-0.log"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    try:
        await until_ready(tmp_path / "state" / "runner.json")
        event_id = await post_event(ingress_port, {"mode": "fail-once"})

        async def retry_logged() -> list[dict[str, Any]] | None:
            return [line for line in lines() if line.get("event_id") == event_id] or None

        retries = await wait_for(retry_logged, timeout=30, what="the retry's line in runner.log")
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=30)
        assert len(retries) == 1, retries
        assert retries[0]["msg"] == "delivery failed; retrying after the backoff"
        assert retries[0]["status"] == 503
        assert retries[0]["event_type"] == "test.flaky"
        assert retries[0]["retry"] == 1
        assert retries[0]["delay_seconds"] == pytest.approx(0.2)
        assert not [line for line in lines() if "HTTP Request" in line.get("msg", "")], "no line per delivery"
    finally:
        pack = LocalPack(options(tmp_path / "cleanup", manifests, prefix))
        await delete_topology(pack)
