"""The queue arguments the topology declares (no broker needed): the delivery limit and its dead-letter route
on quorum trigger queues, none on classic ones, and the generation-2 names beside the generation-1 ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp

from eco2_tools.local.topology import DELIVERY_LIMIT, Topology
from eco2_tools.manifests import Manifests
from tests.local.test_runner import flaky_manifests


def planned(tmp_path: Path) -> Topology:
    return Topology.plan(Manifests.load(flaky_manifests(tmp_path / "m", retry=2)), "p")


def test_a_quorum_trigger_queue_dead_letters_to_its_sink_after_the_delivery_limit(tmp_path: Path) -> None:
    topology = planned(tmp_path)
    plan = topology.triggers["flaky"]
    assert topology.queue_type == "quorum"
    assert topology.trigger_queue_arguments(plan) == {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": plan.dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def test_without_a_sink_the_limit_stays_and_without_quorum_it_goes(tmp_path: Path) -> None:
    topology = planned(tmp_path)
    plan = topology.triggers["flaky"]
    no_sink = dataclasses.replace(plan, dead_letter_exchange=None, dead_letter_queue=None)
    assert topology.trigger_queue_arguments(no_sink) == {"x-queue-type": "quorum", "x-delivery-limit": DELIVERY_LIMIT}
    classic = dataclasses.replace(topology, queue_type="classic")
    assert classic.trigger_queue_arguments(plan) == {"x-queue-type": "classic"}


def test_generation_2_names_sit_beside_the_generation_1_ones(tmp_path: Path) -> None:
    plan = planned(tmp_path).triggers["flaky"]
    assert plan.legacy_queue == "p.eco2.trigger.flaky"
    assert plan.queue == "p.eco2.trigger.flaky.v2"
    assert plan.retry_queue(1, legacy=True) == "p.eco2.trigger.flaky.retry.100ms"
    assert plan.retry_queue(1) == "p.eco2.trigger.flaky.v2.retry.100ms"
    assert plan.dead_letter_queue == "p.eco2.trigger.flaky.dlq"  # unchanged: its arguments did not change
    assert list(plan.retry_attempts) == [1, 2]


async def test_the_runners_http_pool_holds_every_delivery_the_pack_can_have_in_flight() -> None:
    from eco2_tools.local.client import SPARE_CONNECTIONS, runner_session
    from eco2_tools.local.topology import DISPATCHER_PREFETCH
    from tests.support import ROOT

    topology = Topology.plan(Manifests.load(ROOT), "p")
    in_flight = topology.deliveries_in_flight()
    # Ten shards per model stage at the dispatcher's 100 each: a pool of 1,000 would queue deliveries in it.
    assert in_flight >= 2 * 10 * DISPATCHER_PREFETCH
    async with runner_session(in_flight) as http:
        assert isinstance(http.connector, aiohttp.TCPConnector)
        assert http.connector.limit == in_flight + SPARE_CONNECTIONS
