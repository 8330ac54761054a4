"""What the 202's durability costs: submits with and without a WAIT for one replica, side by side.

    .venv/bin/python -m tests.benchmarks.submit_durability [--rounds 10] [--submits 200] [--out results/...]

An HA set of its own (eco2_tools.ha: a Redis primary, a replica and three Sentinels on free ports, removed at the
end) and two in-process gateways (functions-framework's app over httpx.ASGITransport) on its
redis+sentinel:// URL, both sending to one recording HTTP sink (tests.gateway.support.RecordingSink). One has
ECO2_SUBMIT_WAIT_REPLICAS=0 (the 202 once the primary has the job and its outbox entry), the other
ECO2_SUBMIT_WAIT_REPLICAS=1 (once the replica has them too, at most ECO2_SUBMIT_WAIT_TIMEOUT_MS). Rounds
alternate between them, so the machine's noise falls on both; each round posts `submits` scans one after another
(a fresh X-Idempotency-Key each). Latency = POST sent -> 202 received; the wait's misses
(eco2_gateway_submits_unreplicated_total) beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from eco2.functions.gateway import Gateway
from eco2.serving import load_function
from eco2_tools.bench.harness import machine_info, new_results
from eco2_tools.ha.cluster import on_free_ports
from tests.gateway.conftest import gateway_env
from tests.gateway.support import PUBLIC_IMAGE, RecordingSink, bearer

SIDES = {"without WAIT": "0", "WAIT 1 replica": "1"}


async def one_round(client: httpx.AsyncClient, submits: int) -> list[float]:
    walls: list[float] = []
    for _ in range(submits):
        headers = {**bearer("bench-user"), "X-Idempotency-Key": uuid.uuid4().hex}
        started = time.perf_counter()
        response = await client.post("/api/v1/scan", json={"image_url": PUBLIC_IMAGE}, headers=headers)
        walls.append(time.perf_counter() - started)
        if response.status_code != 202:
            raise RuntimeError(f"the gateway answered {response.status_code}: {response.text}")
    return walls


async def measure(redis_url: str, sink: RecordingSink, rounds: int, submits: int) -> dict[str, Any]:
    gateways: dict[str, tuple[httpx.AsyncClient, Gateway]] = {}
    for side, replicas in SIDES.items():
        app, function = load_function("gateway")
        assert isinstance(function, Gateway)
        env = gateway_env(sink.url, REDIS_URL=redis_url, ECO2_SUBMIT_WAIT_REPLICAS=replicas, LOG_LEVEL="ERROR")
        await function.start(env)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        gateways[side] = (client, function)
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        for client, _ in gateways.values():  # warm-up, not counted
            await one_round(client, 20)
        for _ in range(rounds):
            for side, (client, _) in gateways.items():
                walls[side] += await one_round(client, submits)
            sink.reset()
        return {side: _figures(walls[side], gateways[side][1]) for side in SIDES}
    finally:
        for client, function in gateways.values():
            await client.aclose()
            await function.stop()


def _figures(walls: list[float], function: Gateway) -> dict[str, Any]:
    ordered = sorted(walls)
    unreplicated = function.context.metrics.submit_unreplicated._value.get()
    return {
        "submits": len(walls),
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "mean_ms": 1000 * statistics.fmean(ordered),
        "unreplicated": int(unreplicated),
    }


def report(console: Console, figures: dict[str, Any]) -> None:
    table = Table(title="POST /api/v1/scan over Redis behind Sentinel, with and without WAIT for one replica")
    for column in ("figure", *SIDES, "difference"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    without, with_ = (figures[side] for side in SIDES)
    for label, key in {"p50 (ms)": "p50_ms", "p99 (ms)": "p99_ms", "mean (ms)": "mean_ms"}.items():
        table.add_row(label, f"{without[key]:.2f}", f"{with_[key]:.2f}", f"{with_[key] - without[key]:+.2f}")
    table.add_row("202s before the replica had them", "—", str(with_["unreplicated"]), "")
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.submit_durability", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="rounds, alternating the two gateways (default 10)")
    parser.add_argument("--submits", type=int, default=200, help="submits per round and side (default 200)")
    parser.add_argument("--out", type=Path, default=Path("results/submit_durability.json"))
    args = parser.parse_args(argv)
    console = Console(width=120)
    results = new_results("submit_durability", machine_info(), {"rounds": args.rounds, "submits": args.submits})
    ha = on_free_ports(Path(tempfile.mkdtemp(prefix="eco2-bench-ha-")), ("redis",))
    sink = RecordingSink()
    ha.up()
    sink.start()
    try:
        results["figures"] = asyncio.run(measure(ha.redis.url(0), sink, args.rounds, args.submits))
    finally:
        sink.stop()
        ha.down()
    report(console, results["figures"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
