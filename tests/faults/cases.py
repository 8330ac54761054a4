"""The fault cases: each runs N scans through a fresh local pack while one kind of fault happens, then audits.

`python -m tests.faults` runs them all (N = 200) but the slow ones and writes docs/faults.md and
results/faults.json; `python -m tests.faults --case provider-limit --case provider-limit-cut` runs the slow ones
(each at least 200 s: the provider's floor); tests/faults/test_faults.py runs a CI-sized subset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from eco2.connections import async_redis
from eco2_tools.ha.cluster import on_free_ports
from tests.faults.ha_cases import broker_alarm, failover_redis, kill_rabbit_node
from tests.faults.pack import AMQP_URL, Pack
from tests.faults.poison import poison_events
from tests.faults.replaying import fail_then_replay
from tests.faults.scans import Audit, RewardCounter, audit, submit_all

# What a case does to the running pack while its scans are submitted and processed; returns notes (a note
# starting with "problem:" fails the case).
Disruptor = Callable[[Pack, asyncio.Event], Coroutine[Any, Any, list[str]]]
# What a case does after the submits and before the audit (the replay case's fix and replay); returns notes.
Recovery = Callable[[Pack, aioredis.Redis, list[str]], Coroutine[Any, Any, list[str]]]


@dataclass(frozen=True)
class Case:
    name: str
    disrupt: Disruptor | None = None
    env: dict[str, str] = field(default_factory=dict)
    # How long, after the last submit, every job gets to end (retries come 4 s, 8 s, 16 s apart here).
    settle_seconds: float = 90.0
    recover: Recovery | None = None
    # Every job must end `done` (not merely ended): the replay and provider-limit cases.
    all_done: bool = False
    # The longest the submits and processing may take for this many scans (the provider-limit cases).
    deadline: Callable[[int], float] | None = None
    # The HA cases: which of a Redis Sentinel set and a RabbitMQ cluster of the run's own the pack runs on.
    ha: tuple[str, ...] = ()


async def kill_functions(pack: Pack, stop: asyncio.Event) -> list[str]:
    """Every second, SIGKILL the running process of a function picked at random (the runner starts another).

    The function is picked, not the process: with one process per function, each is hit every few seconds,
    as a pod would be on a cluster losing a node a second.
    """
    kills = 0
    names = sorted(pack.state().get("functions", {}).keys() - {"gateway"})
    while not stop.is_set():
        victim = random.choice(names)
        pids = [pid for pid, name in pack.function_pids().items() if name == victim]
        if pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(random.choice(pids), signal.SIGKILL)
                kills += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return [f"{kills} function processes SIGKILLed"]


async def kill_runner(pack: Pack, stop: asyncio.Event) -> list[str]:
    """SIGKILL the runner (and with it every function process) once, mid-run, then start it again."""
    await asyncio.sleep(2.0)
    in_flight = pack.in_flight()
    pack.kill_runner()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pack.start)
    return [f"runner SIGKILLed with {in_flight} jobs in flight, then started again"]


async def restart_broker(pack: Pack, stop: asyncio.Event) -> list[str]:
    """RabbitMQ's app stopped for a few seconds mid-run (`rabbitmqctl stop_app` / `start_app`)."""
    await asyncio.sleep(2.0)
    in_flight = pack.in_flight()
    await asyncio.to_thread(_rabbitmqctl, "stop_app")
    await asyncio.sleep(5.0)
    await asyncio.to_thread(_rabbitmqctl, "start_app")
    return [f"RabbitMQ stopped for 5 s with {in_flight} jobs in flight"]


def _rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", command], check=True, capture_output=True, timeout=120)


async def pause_redis(pack: Pack, stop: asyncio.Event) -> list[str]:
    """Redis paused (`CLIENT PAUSE ALL`) for 5 s mid-run, then every pack connection dropped (`CLIENT KILL`)."""
    await asyncio.sleep(2.0)
    in_flight = pack.in_flight()
    admin = aioredis.from_url(pack.redis_url)
    try:
        await admin.client_pause(5000, all=True)
        await asyncio.sleep(6.0)
        killed = await admin.client_kill_filter(_type="normal", skipme=True)
    finally:
        await admin.aclose()
    return [f"Redis paused 5 s with {in_flight} jobs in flight", f"{killed} Redis connections dropped"]


async def model_recovers(pack: Pack, stop: asyncio.Event) -> list[str]:
    """The stand-in fails 30 % of calls with 429, 20 % with 500 and hangs 5 % (set by the case's env)."""
    await stop.wait()
    stats = httpx.get(f"{pack.standin}/v1/standin/stats", timeout=5).json()
    return [f"stand-in faults injected: {stats.get('faults_injected', '?')}"]


# The provider-limit cases: the stand-in admits 2 calls/s (a rolling window), each scan needs 2 model calls.
PROVIDER_RATE = 2.0
CALLS_PER_SCAN = 2
CUT_RATE = 0.5
CUT_SECONDS = 30.0
# The cut starts this far into the run: the pack is busy and the budget has learnt the full rate by then.
CUT_AFTER_SECONDS = 20.0
MAX_429_SHARE = 0.05


def provider_floor(scans: int, cut: bool) -> float:
    """Seconds the provider needs at least: every call at the limit, the cut's 30 s at its lower rate."""
    calls = scans * CALLS_PER_SCAN
    if not cut:
        return calls / PROVIDER_RATE
    return CUT_SECONDS + max(0.0, calls - CUT_RATE * CUT_SECONDS) / PROVIDER_RATE


def provider_deadline(cut: bool) -> Callable[[int], float]:
    return lambda scans: 1.3 * provider_floor(scans, cut) + 10.0


def _standin_stats(pack: Pack) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{pack.standin}/v1/standin/stats", timeout=5).json()
    return stats


def _set_rate(pack: Pack, rate: float) -> None:
    response = httpx.post(f"{pack.standin}/v1/standin/config", json={"requests_per_second": rate}, timeout=5)
    response.raise_for_status()


def limited_provider(cut: bool) -> Disruptor:
    """The stand-in at 2 calls/s (set by the case's env); with `cut`, 0.5/s for 30 s mid-run, then 2/s again.

    Judges what the provider saw: 429s at most 5 % of the calls, exactly 2 answered calls per scan.
    """

    async def disrupt(pack: Pack, stop: asyncio.Event) -> list[str]:
        notes: list[str] = []
        if cut:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CUT_AFTER_SECONDS)
            if not stop.is_set():
                await asyncio.to_thread(_set_rate, pack, CUT_RATE)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CUT_SECONDS)
                await asyncio.to_thread(_set_rate, pack, PROVIDER_RATE)
                notes.append(f"limit cut to {CUT_RATE}/s for {CUT_SECONDS:.0f} s after {CUT_AFTER_SECONDS:.0f} s")
            else:
                notes.append("problem: the run ended before the cut")
        await stop.wait()
        return notes + _judge_provider(await asyncio.to_thread(_standin_stats, pack))

    return disrupt


def _judge_provider(stats: dict[str, Any]) -> list[str]:
    calls = sum(stats["calls"].values())
    refused = stats.get("rate_limited", 0)
    jobs = len(stats["by_job"])
    answered_per_scan = (calls - refused) / jobs if jobs else 0.0
    notes = [
        f"model calls {calls}, 429s {refused}, calls in flight at most {stats.get('peak_in_flight', '?')}",
        f"answered model calls per scan {answered_per_scan:.2f}",
    ]
    if calls and refused / calls > MAX_429_SHARE:
        notes.append(f"problem: 429s were {refused / calls:.1%} of model calls (at most {MAX_429_SHARE:.0%})")
    if round(answered_per_scan, 2) != CALLS_PER_SCAN:
        notes.append(f"problem: {answered_per_scan:.2f} answered model calls per scan, not {CALLS_PER_SCAN}")
    return notes


# Cases bound by the provider's floor (minutes at 200 scans), and the HA cases (their own Redis Sentinel set or
# RabbitMQ cluster, up to a minute to start): run only when named.
SLOW_CASES = frozenset({"provider-limit", "provider-limit-cut", "failover-redis", "kill-rabbit-node", "broker-alarm"})
# The share of the provider's limit the pack's budget is set to, as docs/operations.md advises: calls paced at exactly
# the limit reach the provider with the network's and the event loop's jitter, and a rolling window refuses the ones
# that arrive early.
BUDGET_SHARE = 0.95
PROVIDER_LIMIT_ENV = {
    "STANDIN_REQUESTS_PER_SECOND": str(PROVIDER_RATE),
    # The pack's shared budget, configured under the provider's limit as an operator would (docs/operations.md).
    "ECO2_MODEL_REQUESTS_PER_MINUTE": str(int(PROVIDER_RATE * 60 * BUDGET_SHARE)),
}


def provider_case(name: str, *, cut: bool) -> Case:
    """A provider-limit case: every scan must end done, within the bound of the provider's floor."""
    return Case(
        name,
        limited_provider(cut=cut),
        env=PROVIDER_LIMIT_ENV,
        settle_seconds=600.0,
        all_done=True,
        deadline=provider_deadline(cut),
    )


CASES: dict[str, Case] = {
    "baseline": Case("baseline"),
    "kill-functions": Case("kill-functions", kill_functions),
    # The stand-in at a fifth of the seed's latencies, so work is in flight when the fault hits.
    "kill-runner": Case("kill-runner", kill_runner, env={"STANDIN_LATENCY_SCALE": "0.2"}),
    "restart-broker": Case("restart-broker", restart_broker, env={"STANDIN_LATENCY_SCALE": "0.2"}),
    "pause-redis": Case("pause-redis", pause_redis, env={"STANDIN_LATENCY_SCALE": "0.2"}),
    "model-faults": Case(
        "model-faults",
        model_recovers,
        env={"STANDIN_FAULT_429": "0.3", "STANDIN_FAULT_500": "0.2", "STANDIN_FAULT_HANG": "0.05"},
        settle_seconds=180.0,
    ),
    # Every event delivered twice at once by the runner (both replies published): effects still once each.
    "duplicate-deliveries": Case("duplicate-deliveries", env={"ECO2_DUPLICATE_DELIVERIES": "1"}),
    # The replay function ticks every 2 s here, so it is up (and takes poison) too.
    "poison": Case("poison", poison_events, env={"ECO2_PING_EVERY_SECONDS": "2"}),
    # The model fails every call until all scans failed visibly; then fixed, and `eco2 dlq replay` runs.
    "replay": Case(
        "replay",
        env={"STANDIN_FAULT_500": "1.0", "ECO2_REPLAY_DELAY_SECONDS": "3600"},
        recover=fail_then_replay,
        all_done=True,
    ),
    # Slow (the provider's floor is 200 s for 200 scans): not in the CI subset; run with --case provider-limit.
    "provider-limit": provider_case("provider-limit", cut=False),
    "provider-limit-cut": provider_case("provider-limit-cut", cut=True),
    # High availability, each on a set of its own (slow to start): run with --case NAME.
    # The 202 waits for the replica here, so a scan accepted just before the kill is not lost with the primary.
    "failover-redis": Case(
        "failover-redis",
        failover_redis,
        env={"STANDIN_LATENCY_SCALE": "0.2", "ECO2_SUBMIT_WAIT_REPLICAS": "1"},
        ha=("redis",),
    ),
    "kill-rabbit-node": Case(
        "kill-rabbit-node", kill_rabbit_node, env={"STANDIN_LATENCY_SCALE": "0.2"}, ha=("rabbit",)
    ),
    "broker-alarm": Case("broker-alarm", broker_alarm, env={"STANDIN_LATENCY_SCALE": "0.2"}, ha=("rabbit",)),
}


def _deadline_note(took: float, deadline: float) -> str:
    # The audit's own checks run inside `took` too; they take about a second, small beside the bound.
    verdict = "within" if took <= deadline else "problem: over"
    return f"{verdict} the bound: submits to audited in {took:.1f} s (bound {deadline:.1f} s)"


@contextlib.contextmanager
def _workdir(name: str, keep: bool) -> Iterator[str]:
    if keep:
        path = tempfile.mkdtemp(prefix=f"eco2-fault-{name}-")
        print(f"{name}: logs and state in {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"eco2-fault-{name}-") as path:
        yield path


async def run_case(case: Case, scans: int, redis_url: str) -> Audit:
    result = Audit(case.name, scans)
    # ECO2_FAULT_KEEP=1 keeps the run's logs and state (its folder is printed) for a look afterwards.
    keep = bool(os.environ.get("ECO2_FAULT_KEEP"))
    with _workdir(case.name, keep) as workdir:
        ha = on_free_ports(Path(workdir) / "ha", case.ha) if case.ha else None
        if ha is not None:
            await asyncio.to_thread(ha.up)
            redis_url = ha.redis.url(0) if "redis" in case.ha else redis_url
        redis = async_redis(redis_url)
        await redis.flushdb()  # the suite's own DB: no claims or jobs left from an earlier run
        amqp_url = ha.rabbit.urls() if ha is not None and "rabbit" in case.ha else AMQP_URL
        pack = Pack(Path(workdir), redis_url, env_extra=case.env, ha=ha, amqp_url=amqp_url)
        await asyncio.to_thread(pack.start)
        rewards = RewardCounter(pack)
        started = time.monotonic()
        try:
            await rewards.start()
            stop = asyncio.Event()
            disruption = asyncio.create_task(case.disrupt(pack, stop)) if case.disrupt else None
            submitted = time.monotonic()
            job_ids = await submit_all(pack, scans)
            if case.recover is not None:
                result.notes += await case.recover(pack, redis, job_ids)
            await audit(result, pack, redis, job_ids, rewards, case.settle_seconds)
            if case.deadline is not None:
                result.notes.append(_deadline_note(time.monotonic() - submitted, case.deadline(scans)))
            if disruption is not None:
                stop.set()
                result.notes += await disruption
            result.problems = [note for note in result.notes if note.startswith("problem:")]
            if case.all_done and result.done != result.scans:
                result.problems.append(f"problem: {result.scans - result.done} jobs not done")
        finally:
            result.seconds = time.monotonic() - started
            await rewards.aclose()
            await redis.aclose()
            await asyncio.to_thread(pack.stop)
            await pack.delete_topology()
            if ha is not None:
                await asyncio.to_thread(ha.down)
    return result
