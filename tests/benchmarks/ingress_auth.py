"""What the sender credential costs at the broker ingress: the runner's ingress with and without it, side by side.

Two ingress apps (eco2_tools.local.ingress.create_ingress, as the runner serves it) publish with confirms to one
throwaway exchange of the real RabbitMQ; one checks the pack's bearer token, the other checks nothing. Rounds
alternate between them (so the machine's noise falls on both), each posting the same binary-mode CloudEvents over
one in-process HTTP client. Per event: the process's CPU time and the wall time of a post (p50). A scan puts one
event through the ingress locally (the gateway's); in a cluster the stages' replies go through the broker's
ingress too, five per scan: the per-scan figures say both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette

from eco2_tools.bench.harness import machine_info, new_results
from eco2_tools.local.ingress import create_ingress
from eco2_tools.local.metrics import RunnerMetrics

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
EVENTS_PER_SCAN = {"local (the gateway's event)": 1, "cluster (and four replies)": 5}


def event_headers(token: str | None) -> tuple[dict[str, str], bytes]:
    event = CloudEvent(
        {"type": "eco2.scan.requested", "source": "/eco2/gateway", "id": uuid.uuid4().hex, "subject": "job-bench"},
        {"job_id": "job-bench", "user_id": "u", "image_url": "https://example.com/a.png"},
    )
    headers, body = to_binary(event)
    credential = {"Authorization": f"Bearer {token}"} if token else {}
    return dict(headers) | credential, body if isinstance(body, bytes) else str(body).encode()


async def one_round(app: Starlette, token: str | None, events: int) -> tuple[float, list[float]]:
    """CPU seconds of this process over `events` posts, and the wall time of each."""
    walls: list[float] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
        cpu = time.process_time()
        for _ in range(events):
            headers, body = event_headers(token)
            started = time.perf_counter()
            response = await http.post("/", headers=headers, content=body)
            walls.append(time.perf_counter() - started)
            if response.status_code != 202:
                raise RuntimeError(f"the ingress answered {response.status_code}: {response.text}")
        return time.process_time() - cpu, walls


async def measure(rounds: int, events: int) -> dict[str, Any]:
    token = secrets.token_urlsafe(32)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            f"bench-ingress-auth-{uuid.uuid4().hex[:8]}", aio_pika.ExchangeType.FANOUT, auto_delete=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)  # routed, as the broker's exchange routes to the Triggers' queues
        apps = {
            "without": (create_ingress(exchange, RunnerMetrics()), None),
            "with": (create_ingress(exchange, RunnerMetrics(), token=token), token),
        }
        cpu: dict[str, float] = dict.fromkeys(apps, 0.0)
        walls: dict[str, list[float]] = {name: [] for name in apps}
        for app, credential in apps.values():  # warm-up, not counted
            await one_round(app, credential, 50)
        for _ in range(rounds):
            for name, (app, credential) in apps.items():
                spent, timed = await one_round(app, credential, events)
                cpu[name] += spent
                walls[name] += timed
            await queue.purge()
    total = rounds * events
    return {
        name: {
            "events": total,
            "cpu_ms_per_event": 1000 * cpu[name] / total,
            "post_p50_ms": 1000 * statistics.median(walls[name]),
        }
        for name in apps
    }


def report(console: Console, figures: dict[str, Any]) -> dict[str, Any]:
    table = Table(title="the broker ingress, with and without the sender credential")
    for column in ("figure", "without", "with", "difference"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    rows = {"CPU per event (ms)": "cpu_ms_per_event", "post p50 (ms)": "post_p50_ms"}
    differences: dict[str, float] = {}
    for label, key in rows.items():
        without, with_ = figures["without"][key], figures["with"][key]
        differences[key] = with_ - without
        table.add_row(label, f"{without:.3f}", f"{with_:.3f}", f"{with_ - without:+.3f}")
    for scope, events in EVENTS_PER_SCAN.items():
        cost = differences["cpu_ms_per_event"] * events
        table.add_row(f"CPU per scan, {scope}", "", "", f"{cost:+.3f}")
    console.print(table)
    return differences


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.ingress_auth", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10, help="rounds, alternating without and with (default 10)")
    parser.add_argument("--events", type=int, default=300, help="events per round and side (default 300)")
    parser.add_argument("--out", type=Path, default=Path("results/ingress_auth.json"))
    args = parser.parse_args(argv)
    console = Console(width=120)
    results = new_results("ingress_auth", machine_info(), {"rounds": args.rounds, "events": args.events})
    figures = asyncio.run(measure(args.rounds, args.events))
    results["figures"] = figures
    results["difference"] = report(console, figures)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
