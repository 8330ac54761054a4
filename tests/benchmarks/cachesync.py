"""Benchmark of the cache-sync blacklist: lookup cost, authz throughput with and without the cache, propagation.

    .venv/bin/python -m tests.benchmarks.cachesync [--seconds 8] [--rounds 100] [--out results/cachesync.json]

1. Lookup cost, in this process: `Blacklist.is_revoked` answered from the local copy (10,000 revoked tokens
   held, a live consumer) against one Redis round trip (`EXISTS`, redis.asyncio) — the cost it replaces.
2. authz throughput: one `eco2 serve authz` process with the local copy, then one asking Redis per request
   (ECO2_BLACKLIST_LOOKUP=redis, the old behaviour); the same closed-loop load (raw HTTP/1.1 keep-alive
   connections from this process, cheaper than any client library) for the same time; requests/s and latency.
3. Propagation: four authz processes; a revocation published on the fanout exchange, then each process asked
   over its own keep-alive connection about every millisecond until it answers 401; the time from just
   before the publish (on an open connection) to the last of the four refusing, per round.
4. The consumer: pika in a thread against aio-pika in the event loop (tests.benchmarks.cachesync_consumers).

Redis and RabbitMQ are the machine's (ECO2_TEST_REDIS_URL, default DB 9; this run's own exchanges); the
processes and the keys this run wrote are removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import redis.asyncio as aioredis

from eco2 import keys
from eco2.cachesync.blacklist import Blacklist
from eco2.cachesync.events import SyncEventType
from eco2.cachesync.handler import CatalogCache, LocalCaches, RevokedTokens
from eco2.cachesync.replica import CacheSync, SyncSettings
from eco2_tools.bench import harness
from eco2_tools.bench.report import Row, rows_table, sample_row
from tests.benchmarks.cachesync_consumers import consumer_rows
from tests.cachesync.support import (
    AMQP_URL,
    Exchanges,
    delete_made_exchanges,
    function_env,
    new_token,
    publish_on,
    start_fleet,
    stop_all,
)
from tests.support import REDIS_TEST_URL

HELD = 10_000
LOOKUPS = 20_000
CONNECTIONS = 32
FLEET = 4
POLL_SECONDS = 0.001


class RawHttp:
    """One keep-alive HTTP/1.1 connection: GET with headers, the status back (the body read and dropped)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawHttp:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def get(self, path: str, headers: dict[str, str]) -> int:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\n{lines}\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await self._reader.readexactly(int(line.split(b":")[1]))
        return status

    def close(self) -> None:
        self._writer.close()


# --- 1. lookup cost -------------------------------------------------------------------------------------------


async def lookup_rows(client: aioredis.Redis) -> list[Row]:
    sync = CacheSync(
        SyncSettings(redis_url=REDIS_TEST_URL), LocalCaches(RevokedTokens(), CatalogCache()), frozenset(), name="bench"
    )
    now = time.time()
    sync.caches.revoked.merge((f"held-{i}", now + 3600) for i in range(HELD))
    sync.live = True  # as when consuming: a miss is answered without Redis
    blacklist = Blacklist(sync, client, source="/bench")
    hits, misses, trips = [], [], []
    for i in range(LOOKUPS):
        started = time.perf_counter()
        await blacklist.is_revoked(f"held-{i % HELD}")
        hits.append(time.perf_counter() - started)
        started = time.perf_counter()
        await blacklist.is_revoked(f"absent-{i}")
        misses.append(time.perf_counter() - started)
    for i in range(LOOKUPS // 10):
        started = time.perf_counter()
        await client.exists(keys.revoked_token(f"absent-{i}"))
        trips.append(time.perf_counter() - started)
    rows = [
        sample_row("lookup: cache hit (revoked)", hits, target=0.0001, note=f"{HELD:,} held; target < 0.1 ms"),
        sample_row("lookup: cache miss (valid, consumer live)", misses, target=0.0001, note="no Redis round trip"),
        sample_row("lookup: Redis EXISTS round trip", trips, note="what every request paid before"),
    ]
    for row in rows[:2]:
        row.note += f"; p50 {(row.p50 or 0) * 1e6:.1f} µs, p99 {(row.p99 or 0) * 1e6:.1f} µs"
    return rows


# --- 2. authz throughput --------------------------------------------------------------------------------------


async def load(url: str, headers: dict[str, str], seconds: float) -> tuple[float, list[float], int]:
    """Closed loop over CONNECTIONS connections: requests/s, latencies, non-200 answers."""
    connections = [await RawHttp.open(url) for _ in range(CONNECTIONS)]
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds

    async def worker(conn: RawHttp) -> None:
        nonlocal failures
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status = await conn.get("/api/v1/check", headers)
            latencies.append(time.perf_counter() - started)
            failures += status != 200

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - began
    for conn in connections:
        conn.close()
    return len(latencies) / elapsed, latencies, failures


async def throughput_rows(exchanges: Exchanges, logs: Path, seconds: float) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    rates: dict[str, float] = {}
    headers = new_token().headers
    for mode in ("cache", "redis"):
        fleet = await start_fleet("authz", 1, function_env(exchanges, ECO2_BLACKLIST_LOOKUP=mode), logs)
        try:
            await load(fleet[0].url, headers, 1.0)  # warm: JWT verified once, connections open
            rate, latencies, failures = await load(fleet[0].url, headers, seconds)
        finally:
            stop_all(fleet)
        if failures:
            raise harness.BenchError(f"{failures} authz answers were not 200 with the {mode} lookup")
        rates[mode] = rate
        name = "authz: local cache" if mode == "cache" else "authz: Redis lookup per request"
        rows.append(sample_row(name, latencies, note=f"{rate:,.0f} requests/s, {CONNECTIONS} connections"))
    ratio = rates["cache"] / rates["redis"]
    return rows, {"requests_per_second": rates, "ratio": ratio, "target_ratio": 2.0}


# --- 3. propagation -------------------------------------------------------------------------------------------


async def propagation_row(exchanges: Exchanges, logs: Path, rounds: int) -> Row:
    fleet = await start_fleet("authz", FLEET, function_env(exchanges), logs)
    connections = [await RawHttp.open(child.url) for child in fleet]
    publisher = await aio_pika.connect(AMQP_URL)  # one open connection, as a publishing service keeps
    channel = await publisher.channel()
    samples: list[float] = []
    try:
        for _ in range(rounds):
            token = new_token()
            started = time.perf_counter()
            await publish_on(channel, exchanges.blacklist, SyncEventType.TOKEN_REVOKED, token.revoked())
            refused = await asyncio.gather(*(until_refused(conn, token.headers, started) for conn in connections))
            samples.append(max(refused))
    finally:
        for conn in connections:
            conn.close()
        await publisher.close()
        stop_all(fleet)
    return sample_row(f"propagation: publish → refused by all {FLEET}", samples, target=0.05, note="target p99 < 50 ms")


async def until_refused(conn: RawHttp, headers: dict[str, str], started: float, deadline: float = 5.0) -> float:
    while time.perf_counter() - started < deadline:
        if await conn.get("/api/v1/check", headers) == 401:
            return time.perf_counter() - started
        # A request per process every millisecond or so: frequent enough to time it, without the polling
        # itself saturating the two cores the four processes and the consumers share.
        await asyncio.sleep(POLL_SECONDS)
    raise harness.BenchError(f"a process still accepted a revoked token after {deadline}s")


# --- the run --------------------------------------------------------------------------------------------------


async def run(results: dict[str, Any], seconds: float, rounds: int, logs: Path) -> None:
    harness.cancel_on_sigterm()
    exchanges = Exchanges.fresh()
    client = aioredis.Redis.from_url(REDIS_TEST_URL, decode_responses=True)
    try:
        results["rows"] = await lookup_rows(client)
        rows, summary = await throughput_rows(exchanges, logs, seconds)
        results["rows"] += rows
        results["throughput"] = summary
        results["rows"].append(await propagation_row(exchanges, logs, rounds))
        results["rows"] += await consumer_rows(rounds)
    finally:
        await cleanup(client)
        await client.aclose()
        await delete_made_exchanges()


async def cleanup(client: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        async for name in client.scan_iter(match=keys.revoked_token("*")):
            await client.delete(name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("cachesync", __doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per authz mode")
    parser.add_argument("--rounds", type=int, default=200, help="propagation rounds")
    args = parser.parse_args(argv)
    console = harness.wide_console(140)
    machine = harness.machine_info()
    config = {"held": HELD, "lookups": LOOKUPS, "connections": CONNECTIONS, "fleet": FLEET, **vars(args)}
    config["out"] = str(args.out)
    results = harness.new_results("cachesync", machine, config)
    harness.print_header(console, "cache-sync: blacklist lookup, authz throughput, propagation", machine)
    with tempfile.TemporaryDirectory(prefix="eco2-bench-cachesync-") as logs:
        code = harness.run_budgeted(run(results, args.seconds, args.rounds, Path(logs)), results, 600)
    if "rows" in results:
        console.print(rows_table("cache-sync", results["rows"], ("p50", "p90", "p99")))
    if "throughput" in results:
        t = results["throughput"]
        console.print(
            f"authz requests/s: cache {t['requests_per_second']['cache']:,.0f} vs Redis per request "
            f"{t['requests_per_second']['redis']:,.0f} = {t['ratio']:.2f}x (target >= 2x)"
        )
    harness.write_results(console, results, args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
