"""The durable outbox: a send whose outcome is unknown never fails a scan, and every accepted scan reaches the broker.

Each test here is the regression test of a defect of the hardening issue (A1-A4): on the gateway before the
outbox each one failed (503 answers, failed jobs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from eco2.events import EventType, event_id
from eco2.gateway.idempotency import job_id_for
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer
from tests.support import exposition, free_port, wait_for

# A sweeper that looks often and backs off briefly, so a test waits for delivery in well under a second.
FAST_SWEEP = {
    "ECO2_OUTBOX_SWEEP_SECONDS": "0.05",
    "ECO2_OUTBOX_BACKOFF_SECONDS": "0.05",
    "ECO2_OUTBOX_BACKOFF_CAP_SECONDS": "0.2",
    "ECO2_OUTBOX_TIMEOUT_SECONDS": "0.5",
}


async def submit(gateway: Gateway, key: str) -> httpx.Response:
    headers = {**bearer(), "X-Idempotency-Key": key}
    return await gateway.client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)


async def outbox_depth(gateway: Gateway) -> int:
    outbox = gateway.context.outbox
    assert outbox is not None
    return await outbox.depth()


async def outbox_empty(gateway: Gateway) -> bool:
    return await outbox_depth(gateway) == 0


def requested_id(key: str) -> str:
    return event_id(job_id_for("user-1", key), EventType.SCAN_REQUESTED)


async def sends(gateway: Gateway, path: str, outcome: str) -> float:
    text = exposition(gateway.function)
    wanted = f'eco2_gateway_sink_sends_total{{outcome="{outcome}",path="{path}"}} '
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted)), 0.0)


@pytest.fixture
def idle_closing_sink() -> Iterator[RecordingSink]:
    sink = RecordingSink(idle_close=0.1)
    sink.start()
    yield sink
    sink.stop()


async def test_a1_a_send_answered_after_the_timeout_is_accepted_and_resent_with_the_same_id(
    make_gateway: MakeGateway, sink: RecordingSink
) -> None:
    """The ingress published the event but answered late: 202, the job is not failed, the same event again."""
    gateway = await make_gateway(ECO2_SINK_TIMEOUT_SECONDS="0.2", **FAST_SWEEP)
    sink.mode = "late"
    # Only the submit's own send is answered late: the ingress is back to prompt answers the moment it has that
    # one, so the sweeper's re-send (it may come within 0.1 s) cannot meet a late answer too.
    sink.on_receive = lambda: setattr(sink, "mode", "ok")
    response = await submit(gateway, "late")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert requested_id("late") in sink.ids(), "the ingress had it all along"
    # The outcome was unknown, so the send stayed pending in the outbox (the two counters below say it went out
    # from there) until the sweeper's re-send was answered.
    await wait_for(lambda: outbox_empty(gateway), what="the sweeper to deliver the pending send")
    assert sink.ids() == [requested_id("late")] * 2, "re-sent with the same event id (the stages deduplicate)"
    job = await gateway.store.get(job_id)
    assert job is not None
    assert job["status"] == "queued"
    # The re-send is the same trace: the traceparent the job keeps, on both sends.
    assert [str(r.event["traceparent"]) for r in sink.events()] == [job["traceparent"]] * 2
    assert [(e.stage, e.status) for e in await gateway.store.events(job_id)] == [("queued", "queued")]
    assert await sends(gateway, "submit", "timeout") == 1
    assert await sends(gateway, "outbox", "ok") == 1


async def test_a2_a_send_on_a_keep_alive_connection_the_ingress_closed_is_retried(
    make_gateway: MakeGateway, idle_closing_sink: RecordingSink
) -> None:
    """The ingress closes idle connections; a submit that meets one goes out again on a new one, at once."""
    gateway = await make_gateway(K_SINK=idle_closing_sink.url)
    statuses: list[int] = []
    for burst in range(3):
        responses = await asyncio.gather(*(submit(gateway, f"burst-{burst}-{i}") for i in range(10)))
        statuses += [r.status_code for r in responses]
        # Not a wait for anything: idle longer than the ingress keeps connections, so every pooled one is closed.
        await asyncio.sleep(0.3)
    assert statuses == [202] * 30
    assert sorted(idle_closing_sink.ids()) == sorted(
        requested_id(f"burst-{b}-{i}") for b in range(3) for i in range(10)
    )
    assert await sends(gateway, "submit", "ok") == 30, "delivered by the submits themselves, not by the sweeper"
    assert await outbox_empty(gateway)


async def test_a3_a_store_failure_after_the_send_still_answers_202(
    make_gateway: MakeGateway, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes away right after the broker took the event: the scan was accepted, so the answer is 202."""
    gateway = await make_gateway(**FAST_SWEEP)
    client = gateway.context.store.redis
    healthy = client.connection_pool
    dead = aioredis.ConnectionPool.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    sink.on_receive = lambda: setattr(client, "connection_pool", dead)  # as the ingress answers
    with caplog.at_level(logging.WARNING, logger="eco2.gateway"):
        response = await submit(gateway, "store-down")
    sink.on_receive = None
    client.connection_pool = healthy
    await dead.disconnect()
    assert response.status_code == 202, response.text
    assert "outbox entry could not be updated" in caplog.text
    await wait_for(lambda: outbox_empty(gateway), what="the sweeper to settle the entry left behind")
    assert set(sink.ids()) == {requested_id("store-down")}


async def test_a4_while_the_broker_is_down_scans_wait_in_the_outbox_and_are_delivered_once_it_is_back(
    make_gateway: MakeGateway,
) -> None:
    port = free_port()
    gateway = await make_gateway(K_SINK=f"http://127.0.0.1:{port}/", **FAST_SWEEP)
    keys = [f"down-{i}" for i in range(20)]
    responses = [await submit(gateway, key) for key in keys]
    assert [r.status_code for r in responses] == [202] * 20
    for response in responses:
        job = await gateway.store.get(response.json()["job_id"])
        assert job is not None
        assert job["status"] == "queued"
    assert await outbox_depth(gateway) == 20
    assert await sends(gateway, "submit", "unreachable") == 20
    broker = RecordingSink()
    broker.start(port)
    try:
        await wait_for(lambda: outbox_empty(gateway), timeout=15, what="the outbox to drain")
        assert sorted(broker.ids()) == sorted(requested_id(key) for key in keys), "each one, exactly once"
    finally:
        broker.stop()
    for response in responses:
        job = await gateway.store.get(response.json()["job_id"])
        assert job is not None
        assert job["status"] == "queued"


async def test_a4_when_redis_is_unreachable_a_submit_is_503_with_retry_after_and_creates_nothing(
    make_gateway: MakeGateway, sink: RecordingSink
) -> None:
    gateway = await make_gateway(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    response = await submit(gateway, "no-redis")
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert sink.events() == []


async def test_a_repeat_of_an_accepted_scan_is_its_202_even_while_the_send_is_pending(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(K_SINK=f"http://127.0.0.1:{free_port()}/")
    first = await submit(gateway, "pending")
    again = await submit(gateway, "pending")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert await outbox_depth(gateway) == 1, "a repeat adds no second pending send"
