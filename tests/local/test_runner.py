"""The local runtime over real RabbitMQ and Redis: routing from the manifests, retries, dead letters,
parallelism, a SIGKILL during backoff, scale to zero and back, and one scan end to end."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2 import keys
from eco2.dead_letters import DOMAINS
from eco2.jobs import JobStore
from eco2_tools.local.runner import LocalPack
from eco2_tools.local.topology import topology_names
from eco2_tools.manifests import Manifests
from tests.local.conftest import AMQP_URL, delete_topology, one_scan, options, runner_env
from tests.support import ROOT, SENDER, free_port, wait_for

FIXTURES = ROOT / "tests" / "fixtures"
FLAKY = "test:flaky"


def flaky_manifests(
    target: Path,
    *,
    retry: int | None = 2,
    backoff: str = "PT0.1S",
    policy: str = "linear",
    parallelism: int = 1,
    filter_type: str = "test.flaky",
    window: str = "60s",
    vip_parallelism: int | None = None,
    min_scale: int = 0,
    env: dict[str, str] | None = None,
) -> Path:
    """A manifest root with the `flaky` test subscriber behind one Trigger, and the real dead-letter sink."""
    (target / "knative").mkdir(parents=True)
    (target / "eventing").mkdir()
    shutil.copy(ROOT / "knative" / "dead-letter.yaml", target / "knative")
    service = yaml.safe_load((ROOT / "knative" / "rules.yaml").read_text())
    service["metadata"]["name"] = "flaky"
    service["metadata"]["labels"]["eco2.dev/function"] = "flaky"
    template = service["spec"]["template"]
    template["metadata"]["annotations"].update(
        {
            "autoscaling.knative.dev/window": window,
            "autoscaling.knative.dev/target": "100",
            "autoscaling.knative.dev/min-scale": str(min_scale),
        }
    )
    template["metadata"]["annotations"].pop("autoscaling.knative.dev/scale-to-zero-pod-retention-period", None)
    container = template["spec"]["containers"][0]
    container["command"] = ["eco2", "serve", "flaky"]
    extra = [{"name": name, "value": value} for name, value in (env or {}).items()]
    container["env"] = [{"name": "ECO2_ROOT", "value": str(FIXTURES)}, *extra]
    (target / "knative" / "flaky.yaml").write_text(yaml.safe_dump(service))
    for name in ("broker.yaml", "broker-config.yaml"):
        shutil.copy(ROOT / "eventing" / name, target / "eventing")
    delivery: dict[str, Any] = {
        "backoffPolicy": policy,
        "backoffDelay": backoff,
        "deadLetterSink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "dead-letter"}},
    }
    if retry is not None:
        delivery["retry"] = retry
    trigger: dict[str, Any] = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": "flaky",
            "namespace": "eco2",
            "annotations": {"rabbitmq.eventing.knative.dev/parallelism": str(parallelism)},
        },
        "spec": {
            "broker": "eco2",
            "filter": {"attributes": {"type": filter_type}},
            "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "flaky"}},
            "delivery": delivery,
        },
    }
    triggers = [trigger]
    if vip_parallelism is not None:
        vip: dict[str, Any] = json.loads(json.dumps(trigger))
        vip["metadata"]["name"] = "flaky-vip"
        vip["metadata"]["annotations"]["rabbitmq.eventing.knative.dev/parallelism"] = str(vip_parallelism)
        vip["spec"]["filter"]["attributes"]["priority"] = "high"
        trigger["spec"]["filter"]["attributes"]["priority"] = "normal"
        triggers.append(vip)
    (target / "eventing" / "triggers.yaml").write_text(yaml.safe_dump_all(triggers))
    return target


async def send(pack: LocalPack, event_type: str, data: dict[str, Any], *, priority: str | None = None) -> str:
    event_id = uuid.uuid4().hex
    attributes = {"type": event_type, "source": "/test", "id": event_id, "subject": "job-x"}
    if priority is not None:
        attributes["priority"] = priority
    event = CloudEvent(attributes, data)
    headers, body = to_binary(event)
    async with httpx.AsyncClient() as http:
        response = await http.post(pack.ingress_url, headers=dict(headers) | SENDER, content=body)
    assert response.status_code == 202, response.text
    return event_id


def child_settings(tmp_path: Path) -> tuple[str, int, dict[str, str]]:
    """A throwaway topology prefix, an ingress port and the environment of an `eco2 up` child using them."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    ingress_port = free_port()
    return prefix, ingress_port, runner_env(tmp_path / "state", prefix, ingress_port)


async def until_ready(state_file: Path) -> None:
    """Until an `eco2 up` child has written its state file: it is ready."""

    async def ready() -> bool:
        return state_file.exists()

    await wait_for(ready, timeout=30, what="the runner")


async def post_event(ingress_port: int, data: dict[str, Any]) -> str:
    """A test.flaky event into the ingress of an `eco2 up` child; its id."""
    event = CloudEvent({"type": "test.flaky", "source": "/test", "id": uuid.uuid4().hex}, data)
    headers, body = to_binary(event)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"http://127.0.0.1:{ingress_port}", headers=dict(headers) | SENDER, content=body)
    assert response.status_code == 202, response.text
    return str(event["id"])


async def attempts(redis_client: aioredis.Redis, event_id: str) -> int:
    return int(await redis_client.get(f"{FLAKY}:attempts:{event_id}") or 0)


async def dead_letter(redis_client: aioredis.Redis, event_id: str) -> dict[str, str] | None:
    for domain in DOMAINS:
        found = await _dead_letter_in(redis_client, domain, event_id)
        if found is not None:
            return found
    return None


async def _dead_letter_in(redis_client: aioredis.Redis, domain: str, event_id: str) -> dict[str, str] | None:
    entries: list[tuple[str, dict[str, str]]] = await redis_client.xrange(keys.dead_letters(domain)) or []  # type: ignore[assignment]
    for _, fields in entries:
        attributes: dict[str, str] = json.loads(fields["attributes"])
        if attributes["id"] == event_id:
            return attributes
    return None


async def test_ingress_refuses_what_is_not_a_cloudevent(start_pack: Callable[..., Any], tmp_path: Path) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m"))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            pack.ingress_url, content=b"{}", headers={"content-type": "application/json"} | SENDER
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cloudevent"


@pytest.mark.parametrize("retry", [0, 2])
async def test_5xx_is_retried_per_the_delivery_spec_then_dead_lettered(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis, retry: int
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", retry=retry))
    event_id = await send(pack, "test.flaky", {"mode": "fail"})
    letter = await wait_for(lambda: dead_letter(redis_client, event_id), timeout=30, what="the dead letter")
    assert await attempts(redis_client, event_id) == retry + 1
    assert letter["knativeerrorcode"] == "503"
    assert letter["knativeerrordest"].startswith("http://127.0.0.1:")
    assert "unavailable" in letter["knativeerrordata"]


async def test_422_goes_straight_to_the_dead_letter_sink(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", retry=3))
    event_id = await send(pack, "test.flaky", {"mode": "poison"})
    letter = await wait_for(lambda: dead_letter(redis_client, event_id), timeout=30, what="the dead letter")
    assert letter["knativeerrorcode"] == "422"
    assert await attempts(redis_client, event_id) == 1


async def test_a_retry_that_succeeds_is_not_dead_lettered(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", retry=2))
    event_id = await send(pack, "test.flaky", {"mode": "fail-once"})
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{event_id}"), timeout=30, what="the retried delivery")
    assert await attempts(redis_client, event_id) == 2
    assert await dead_letter(redis_client, event_id) is None


@pytest.mark.parametrize("parallelism", [1, 4])
async def test_parallelism_n_gives_n_concurrent_deliveries_and_no_more(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis, parallelism: int
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", parallelism=parallelism))
    ids = [await send(pack, "test.flaky", {"mode": "slow", "seconds": 0.3}) for _ in range(3 * parallelism)]

    async def all_done() -> bool:
        return all([await redis_client.exists(f"{FLAKY}:done:{i}") for i in ids])

    await wait_for(all_done, timeout=60, what="every slow delivery")
    assert int(await redis_client.get(f"{FLAKY}:max-concurrent") or 0) == parallelism


async def test_changing_a_trigger_filter_in_the_manifests_changes_routing(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", filter_type="test.other"))
    # Parallelism 1 keeps the queue FIFO: had the first event been routed, it would be handled first.
    ignored = await send(pack, "test.flaky", {"mode": "ok"})
    routed = await send(pack, "test.other", {"mode": "ok"})
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{routed}"), timeout=30, what="the routed event")
    assert await attempts(redis_client, ignored) == 0


async def test_a_function_at_zero_is_started_by_an_event_and_stopped_when_idle(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", window="6s"))
    pool = pack.pools["flaky"]
    assert pool.replicas == []
    event_id = await send(pack, "test.flaky", {"mode": "ok"})
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{event_id}"), timeout=30, what="the first event")
    assert pool.cold_starts == 1

    async def scaled_to_zero() -> bool:
        return not pool.replicas

    await wait_for(scaled_to_zero, timeout=20, what="scale to zero")
    again = await send(pack, "test.flaky", {"mode": "ok"})
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{again}"), timeout=30, what="the second event")
    assert pool.cold_starts == 2


async def test_a_vip_event_overtakes_a_backlog_of_normal_ones(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(flaky_manifests(tmp_path / "m", parallelism=1, vip_parallelism=1))
    slow = {"mode": "slow", "seconds": 0.4}
    backlog = [await send(pack, "test.flaky", slow, priority="normal") for _ in range(8)]
    vip = await send(pack, "test.flaky", slow, priority="high")
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{vip}"), timeout=30, what="the VIP event")
    done = sum([await redis_client.exists(f"{FLAKY}:done:{i}") for i in backlog])
    assert done <= 4, f"the VIP event waited for {done} of 8 normal events"


async def test_sigkill_during_backoff_loses_nothing(
    runner_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]],
    tmp_path: Path,
    redis_client: aioredis.Redis,
) -> None:
    manifests = flaky_manifests(tmp_path / "m", retry=2, backoff="PT2S")
    prefix, ingress_port, env = child_settings(tmp_path)
    first = runner_process(manifests, env)
    state_file = tmp_path / "state" / "runner.json"
    await until_ready(state_file)
    event_id = await post_event(ingress_port, {"mode": "fail-once"})
    await wait_for(lambda: attempts(redis_client, event_id), timeout=30, what="the failed first attempt")
    first.kill()  # SIGKILL: the message is now only in the durable delay queue
    first.wait(timeout=10)
    state_file.unlink(missing_ok=True)
    second = runner_process(manifests, env)
    await wait_for(lambda: redis_client.get(f"{FLAKY}:done:{event_id}"), timeout=40, what="the redelivery")
    assert await attempts(redis_client, event_id) == 2
    second.send_signal(signal.SIGINT)
    assert second.wait(timeout=30) == 0, "Ctrl-C shuts the runner down cleanly"
    pack = LocalPack(options(tmp_path / "cleanup", manifests, prefix))
    await delete_topology(pack)


async def test_one_scan_flows_through_the_pack_end_to_end(
    start_pack: Callable[..., Any], redis_client: aioredis.Redis
) -> None:
    pack = await start_pack(None, standin=True, extra_env={"STANDIN_LATENCY_SCALE": "0.01"})
    store = JobStore(redis_client, ttl_seconds=3600)
    job_id, result = await one_scan(pack, store)
    assert result["pipeline_result"]["classification"]["middle_category"] == "금속류"
    assert result["reward"]["name"] == "메탈리"
    stages = [e.stage for e in await store.events(job_id, count=1000) if e.status != "delta"]
    assert stages == ["queued", "vision", "rule", "answer", "reward", "done"]
    # The genuine grant passes persist's check against Redis (eco2.persist.evidence) and is written.
    assert not os.environ.get("DATABASE_URL"), "the pack writes the state dir's SQLite file here"
    database = pack.state_dir / "eco2.sqlite3"

    async def persisted() -> bool:
        with contextlib.closing(sqlite3.connect(database)) as db:
            try:
                rows = db.execute("SELECT job_id FROM reward_ledger WHERE user_id = 'user-1'").fetchall()
            except sqlite3.OperationalError:
                return False  # persist has not started (and created its tables) yet
        return rows == [(job_id,)]

    await wait_for(persisted, timeout=30, what="persist to write the scan's grant")
    # Each replica's metrics on a port of its own (what `eco2 status --json` lists), none on its public port.
    # The ready ones: persist, dead-letter or replay may still be starting on their first event.
    replicas = [
        (name, r) for name, pool in pack.snapshot()["functions"].items() for r in pool["replicas"] if r["ready"]
    ]
    assert {"vision", "rules", "answer", "reward"} <= {name for name, _ in replicas}
    async with httpx.AsyncClient(timeout=10) as http:
        for name, replica in replicas:
            scraped = await http.get(replica["metrics"])
            assert scraped.status_code == 200, name
            if name in ("vision", "rules", "answer", "reward"):
                assert f'eco2_events_total{{function="{name}",outcome="replied"' in scraped.text, name
            # authz answers every path as the ext-authz check of a request to it (401: no token).
            public = await http.get(f"{replica['url']}/metrics")
            assert public.status_code == (401 if name == "authz" else 404), name
            assert "eco2_events_total" not in public.text, name


async def test_the_ingress_refuses_an_event_without_the_packs_sender_credential(
    start_pack: Callable[..., Any], tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    # A forged eco2.reward.granted with a valid shape, posted by something that is not one of the pack's senders.
    pack = await start_pack(flaky_manifests(tmp_path / "m"))
    forged = CloudEvent(
        {"type": "eco2.reward.granted", "source": "/eco2/reward", "id": uuid.uuid4().hex, "subject": "job-x"},
        {"job_id": "job-x", "user_id": "bob", "reward_id": "r", "character": {"character_id": "forged-legendary"}},
    )
    headers, body = to_binary(forged)
    async with httpx.AsyncClient() as http:
        for credential in ({}, {"Authorization": "Bearer not-the-pack-token"}, {"Authorization": "Basic x"}):
            response = await http.post(pack.ingress_url, headers=dict(headers) | credential, content=body)
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthenticated"
    counted = pack.metrics.registry.get_sample_value
    assert counted("eco2_runner_ingress_total", {"outcome": "unauthenticated"}) == 3
    assert counted("eco2_runner_ingress_total", {"outcome": "accepted"}) is None


async def test_down_says_what_stays_on_rabbitmq_and_purge_removes_it(
    runner_process: Callable[[Path, dict[str, str]], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    manifests = flaky_manifests(tmp_path / "m")
    prefix, _, env = child_settings(tmp_path)
    runner_process(manifests, env)
    await until_ready(tmp_path / "state" / "runner.json")
    queues, _ = topology_names(Manifests.load(manifests), prefix)

    def eco2_down(*flags: str) -> str:
        command = [sys.executable, "-m", "eco2_tools.cli", "down", *flags]
        child_env = {**os.environ, **env, "ECO2_MANIFESTS": str(manifests)}
        done = subprocess.run(command, cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return " ".join(done.stdout.split())

    said = eco2_down()
    assert f"the pack's {len(queues)} queues and its exchanges (prefix '{prefix}') stay on RabbitMQ" in said
    assert "--purge" in said
    assert await existing(queues) == set(queues)
    said = eco2_down("--purge")
    assert f"removed the pack's {len(queues)} queues" in said
    assert await existing(queues) == set()


async def existing(queues: list[str]) -> set[str]:
    """Which of `queues` RabbitMQ has (a passive declare of a missing queue closes its channel)."""
    found: set[str] = set()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for name in queues:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
                found.add(name)
                await channel.close()
            except aio_pika.exceptions.ChannelClosed:
                pass
    return found
