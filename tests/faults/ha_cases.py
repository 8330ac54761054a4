"""The high-availability fault cases, on a Redis Sentinel set and a RabbitMQ cluster of their own (eco2_tools.ha):
the Redis primary SIGKILLed mid-run, the RabbitMQ node leading the Trigger queues SIGKILLed mid-run, and a memory
alarm for 20 s mid-run. Each notes the time from the fault to the last scan ended."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.faults.pack import Pack

FAULT_AFTER_SECONDS = 3.0
ALARM_SECONDS = 20.0
PROMOTION_DEADLINE = 30.0
# The killed RabbitMQ node is started again after this, as Kubernetes restarts a StatefulSet's pod. The runner's
# classic queues (a RabbitmqSource's queue, the retry delay queues) live on one node, unreplicated: until their
# node is back, restoring the runner's connection on another node fails on them (NOT_FOUND, home node down).
NODE_DOWN_SECONDS = 15.0
# The dispatcher's log messages (eco2_tools.local.dispatcher) that tell how a delivery met the alarm.
WAITED = "RabbitMQ blocked publishing (a resource alarm): waiting"
RETRIED = "delivery failed; retrying after the backoff"
GIVEN_BACK = "delivery not completed; the message goes back to the queue after a pause"


def last_ended_at(pack: Pack) -> float | None:
    """When the last of this run's jobs was last written (its end, once all ended)."""
    return max((float(stamp) for stamp in pack.job_field("updated_at") if stamp), default=None)


def _to_last_scan(pack: Pack, fault_at: float) -> str:
    ended = last_ended_at(pack)
    if ended is None:
        return "problem: no job was recorded"
    return f"fault to the last scan ended: {ended - fault_at:.1f} s"


async def failover_redis(pack: Pack, stop: asyncio.Event) -> list[str]:
    """SIGKILL the Redis primary mid-run; Sentinel promotes the replica and every client follows it."""
    assert pack.ha is not None
    await asyncio.sleep(FAULT_AFTER_SECONDS)
    in_flight = pack.in_flight()
    fault_at = time.time()
    killed = await asyncio.to_thread(pack.ha.redis.kill_master)
    deadline = time.monotonic() + PROMOTION_DEADLINE
    while (promoted := await asyncio.to_thread(pack.ha.redis.master_port)) in (None, killed):
        if time.monotonic() > deadline:
            return [f"problem: no replica promoted within {PROMOTION_DEADLINE:.0f} s"]
        await asyncio.sleep(0.1)
    promoted_after = time.time() - fault_at
    await stop.wait()
    killing = f"primary :{killed} SIGKILLed with {in_flight} jobs in flight"
    return [f"{killing}; :{promoted} promoted {promoted_after:.1f} s later", _to_last_scan(pack, fault_at)]


async def kill_rabbit_node(pack: Pack, stop: asyncio.Event) -> list[str]:
    """SIGKILL the RabbitMQ node that leads most of this run's queues (the Trigger queues) mid-run; restart it."""
    assert pack.ha is not None
    rabbit = pack.ha.rabbit
    await asyncio.sleep(FAULT_AFTER_SECONDS)
    listed = await asyncio.to_thread(rabbit.ctl, 1, "list_queues", "-q", "--no-table-headers", "name", "leader")
    rows = [line.split() for line in listed.splitlines() if line.startswith(pack.prefix)]
    leaders = Counter(row[1] for row in rows if len(row) == 2)  # a classic queue has no leader
    if not leaders:
        return ["problem: no queue of this run has a leader"]
    node, led = leaders.most_common(1)[0]
    index = next(n for n in range(3) if rabbit.node(n) == node)
    in_flight = pack.in_flight()
    fault_at = time.time()
    await asyncio.to_thread(rabbit.kill_node, index)
    await asyncio.sleep(NODE_DOWN_SECONDS)
    await asyncio.to_thread(rabbit.restart_node, index)
    back_after = time.time() - fault_at
    await stop.wait()
    killing = f"{node} (leader of {led} of the run's queues) SIGKILLed with {in_flight} jobs in flight"
    return [f"{killing}, restarted after {NODE_DOWN_SECONDS:.0f} s (back {back_after:.1f} s after the kill)",
            _to_last_scan(pack, fault_at)]  # fmt: skip


async def broker_alarm(pack: Pack, stop: asyncio.Event) -> list[str]:
    """RabbitMQ's memory alarm for 20 s mid-run: every publisher blocked, then released."""
    assert pack.ha is not None
    rabbit = pack.ha.rabbit
    await asyncio.sleep(FAULT_AFTER_SECONDS)
    in_flight = pack.in_flight()
    fault_at = time.time()
    await asyncio.to_thread(rabbit.raise_memory_alarm, 1)
    blocked_seen = False
    deadline = time.monotonic() + ALARM_SECONDS
    while time.monotonic() < deadline:
        broker = pack.state().get("broker_health", {})
        blocked_seen = blocked_seen or bool(broker.get("blocked"))
        await asyncio.sleep(0.5)
    await asyncio.to_thread(rabbit.clear_memory_alarm, 1)
    cleared_at = time.time()
    await stop.wait()
    notes = [f"memory alarm for {ALARM_SECONDS:.0f} s with {in_flight} jobs in flight", _to_last_scan(pack, fault_at)]
    ended = last_ended_at(pack)
    if ended is not None:
        notes.append(f"alarm cleared to the last scan ended: {max(0.0, ended - cleared_at):.1f} s")
    if not blocked_seen:
        notes.append("problem: the runner's state never showed the broker blocked during the alarm")
    return notes + _deliveries_during_alarm(pack)


def _deliveries_during_alarm(pack: Pack) -> list[str]:
    """From the runner's log: deliveries that waited out the alarm, and any that failed into a retry or were given
    back to the queue instead (each of those costs a stage its backoff: a problem here)."""
    counts = Counter[str]()
    for log in pack.workdir.glob("runner-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            for marker in (WAITED, RETRIED, GIVEN_BACK):
                counts[marker] += marker in line
    notes = [f"{counts[WAITED]} stage replies waited for the unblock"]
    failed = counts[RETRIED] + counts[GIVEN_BACK]
    if failed:
        notes.append(f"problem: {counts[RETRIED]} deliveries retried, {counts[GIVEN_BACK]} given back during the run")
    return notes
