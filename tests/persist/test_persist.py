"""The persist function on the real PostgreSQL and on SQLite: once per key whatever is redelivered, the
durability contract (2xx only after commit), poison rows, a database that is not there, group commit."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from eco2.adapter import EventFunction
from eco2.events import EventType
from eco2.functions.persist import PersistContext, function
from eco2.jobs import JobStore
from tests.persist.conftest import app_of
from tests.persist.events import CATALOG_IDS, back, completed, deliver, granted
from tests.persist.tables import count
from tests.support import REDIS_TEST_URL


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def test_duplicates_and_replays_insert_once(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    user = uid("user")
    events = [granted(user, character, uid("job")) for character in CATALOG_IDS] + [completed(user, uid("job"))]
    for event in events:
        await back(store, event)
    grants = len(CATALOG_IDS)
    # Each event delivered three times at once (a broker redelivering while the first is running) ...
    statuses = await asyncio.gather(*(deliver(persist_http, "/", e) for e in events for _ in range(3)))
    assert set(statuses) == {202}
    # ... and the whole stream replayed later.
    assert set(await asyncio.gather(*(deliver(persist_http, "/", e) for e in events))) == {202}
    assert await count(database_url, "reward_ledger") == grants
    assert await count(database_url, "user_characters") == grants
    assert await count(database_url, "scan_history") == grants + 1
    assert await count(database_url, "scan_history", "WHERE outcome = 'granted'") == grants


async def test_a_granted_history_row_wins_over_already_owned_for_the_same_job(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    user, job = uid("user"), uid("job")
    grant = await back(store, granted(user, CATALOG_IDS[1], job))
    assert await deliver(persist_http, "/", completed(user, job, "already_owned")) == 202
    assert await deliver(persist_http, "/", grant) == 202
    assert await deliver(persist_http, "/", completed(user, job, "already_owned")) == 202
    assert await count(database_url, "scan_history", f"WHERE job_id = '{job}' AND outcome = 'granted'") == 1


async def test_a_row_the_database_refuses_is_poison_and_its_batch_neighbours_commit(
    persist_http: httpx.AsyncClient, database_url: str, store: JobStore
) -> None:
    user = uid("user")
    good = [await back(store, granted(user, character, uid("job"))) for character in CATALOG_IDS[:5]]
    # Passes the event model and Redis's backing (no length limit on names) but not the table's CHECK.
    bad = await back(store, granted(user, CATALOG_IDS[5], uid("job"), name="x" * 200))
    statuses = await asyncio.gather(*(deliver(persist_http, "/", e) for e in [*good, bad]))
    assert statuses == [202] * 5 + [422]
    assert await count(database_url, "reward_ledger") == 5
    response = await persist_http.post("/", headers={"ce-specversion": "1.0"}, content=b"")
    assert response.status_code == 400


async def test_other_event_types_and_bad_data_are_poison(persist_http: httpx.AsyncClient) -> None:
    event = granted(uid("user"), "char-1", uid("job"))
    event["type"] = str(EventType.SCAN_ANSWERED)
    assert await deliver(persist_http, "/", event) == 422
    no_user = CloudEvent({"type": str(EventType.SCAN_COMPLETED), "source": "/t", "id": "1"}, {"job_id": "j"})
    headers, body = to_binary(no_user)
    response = await persist_http.post("/", headers=headers, content=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_data"


async def test_a_database_that_is_not_there_answers_503_and_is_not_ready(store: JobStore) -> None:
    # Nothing listens on port 1: as PostgreSQL down. The function still starts (Knative would route nothing to it).
    fn: EventFunction[PersistContext] = function({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    await fn.start({"REDIS_URL": REDIS_TEST_URL})
    try:
        transport = httpx.ASGITransport(app=app_of(fn))
        async with httpx.AsyncClient(transport=transport, base_url="http://persist") as http:
            assert (await http.get("/readyz")).status_code == 503
            headers, body = to_binary(await back(store, granted(uid("user"), CATALOG_IDS[1], uid("job"))))
            response = await http.post("/", headers=headers, content=body)
            assert response.status_code == 503
            assert response.json()["error"] == "database_unavailable"
    finally:
        await fn.stop()
