"""PostgreSQL restarted while `eco2 serve persist` takes rewards: the deliveries in flight get 503 (the broker
redelivers), none is answered 2xx without its row, and every accepted reward ends in the table.

This test restarts the machine's PostgreSQL cluster (`pg_ctlcluster … restart`): skip it with
ECO2_TEST_PG_RESTART=0 where the cluster is shared or cannot be restarted.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from cloudevents.http import CloudEvent

from eco2.jobs import JobStore
from tests.persist.conftest import PG_URL, reset_postgres
from tests.persist.events import CATALOG_IDS, back, deliver_until_accepted, granted
from tests.support import REDIS_TEST_URL, Child, free_port, start_child, wait_for

CLUSTERS = Path("/etc/postgresql")

pytestmark = pytest.mark.skipif(
    os.environ.get("ECO2_TEST_PG_RESTART", "1") == "0"
    or shutil.which("pg_ctlcluster") is None
    or not CLUSTERS.is_dir()
    or os.geteuid() != 0,
    reason="restarting PostgreSQL needs pg_ctlcluster as root (ECO2_TEST_PG_RESTART=0 skips it)",
)


def restart_postgres() -> None:
    version = sorted(p.name for p in CLUSTERS.iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def persist_child(child_log_dir: Path) -> Iterator[Child]:
    asyncio.run(reset_postgres())
    port = free_port()
    env = {
        "DATABASE_URL": PG_URL,
        "REDIS_URL": REDIS_TEST_URL,
        "ECO2_PERSIST_BATCH_ROWS": "100",
        "ECO2_PERSIST_BATCH_MS": "5",
    }
    child = start_child(["serve", "persist", "--port", str(port)], port=port, env=env, log_dir=child_log_dir)
    yield child
    child.stop()


async def ledger_ids() -> set[str]:
    conn = await asyncpg.connect(PG_URL)
    try:
        return {row[0] for row in await conn.fetch("SELECT reward_id FROM reward_ledger")}
    finally:
        await conn.close()


async def test_postgres_restarted_mid_run_loses_no_reward(persist_child: Child, store: JobStore) -> None:
    run = uuid.uuid4().hex[:8]
    accepted: list[CloudEvent] = []
    statuses: list[int] = []
    stop = asyncio.Event()

    async def sender(http: httpx.AsyncClient, worker: int) -> None:
        n = 0
        while not stop.is_set():
            # A user per event (so each reward id is new), backed in Redis as the reward stage backs it.
            event = await back(store, granted(f"user-{run}-{worker}-{n}", CATALOG_IDS[0], f"job-{run}-{worker}-{n}"))
            await deliver_until_accepted(
                http, persist_child.url, event, deadline=time.monotonic() + 60, statuses=statuses
            )
            accepted.append(event)
            n += 1

    async with httpx.AsyncClient(timeout=30) as http:
        workers = [asyncio.create_task(sender(http, w)) for w in range(20)]
        await wait_for(lambda: asyncio.sleep(0, len(accepted) >= 200), timeout=30, what="rewards flowing")
        await asyncio.to_thread(restart_postgres)
        after_restart = len(accepted)
        await wait_for(lambda: asyncio.sleep(0, len(accepted) >= after_restart + 200), timeout=60, what="recovery")
        stop.set()
        await asyncio.gather(*workers)
        ready = await http.get(f"{persist_child.url}/readyz")

    assert ready.status_code == 200
    assert any(status == 0 or status >= 500 for status in statuses), "the restart was never seen by a delivery"
    granted_ids = {str(e.get_data()["reward_id"]) for e in accepted}  # type: ignore[index]
    missing = granted_ids - await ledger_ids()
    assert not missing, f"{len(missing)} of {len(granted_ids)} accepted rewards are not in the table"
    print(f"{len(granted_ids)} rewards accepted, {sum(s >= 500 or s == 0 for s in statuses)} redeliveries")
