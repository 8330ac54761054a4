"""`eco2 bench`: both runtimes, one after the other in one run, through the same phases:

1. idle: memory of the runtime at rest (the pack: every stage at zero; Celery: its idle worker fleet);
2. warm-up: a few scans, so neither pays its cold starts inside a measurement;
3. zero-latency: a burst of scans with the stand-in answering at once: throughput, e2e p50/p99, and the CPU
   time of every process (/proc/<pid>/stat) over the burst, per scan;
4. seed latencies: a burst with the stand-in at the seed's 3.5 s vision and 7 s answer: completion, e2e
   p50/p99, the p99 above the 10.5 s model floor, peak memory of the runtime's processes.
Scans go straight into each runtime's broker (the pack's ingress, the Celery chain's publish), after their
job was created in Redis as the gateway creates it.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from eco2_tools.bench.checkout import require_checkout

RUNTIMES = ("pack", "celery")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eco2 bench", description="The pack beside the Celery baseline.")
    parser.add_argument("--scans", type=int, default=300, help="zero-latency burst size (default 300)")
    parser.add_argument("--seed-scans", type=int, default=200, help="seed-latency burst (default 200; target 1000)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up scans per runtime (default 10)")
    parser.add_argument(
        "--seed-scale", type=float, default=1.0, help="the seed latencies times this (default 1; tests use less)"
    )
    parser.add_argument("--concurrency", type=int, default=200, help="greenlets per Celery worker (default 200)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="which runtimes (default pack,celery)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one burst may take (default 300)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds at rest before the idle reading")
    parser.add_argument("--out", type=Path, default=Path("benchmarks"), help="where bench.json and bench.png go")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if not runtimes or set(runtimes) - set(RUNTIMES):
        parser().error(f"--runtimes takes {', '.join(RUNTIMES)}")
    if min(args.scans, args.seed_scans) < 1 or args.warmup < 0 or args.seed_scale <= 0:
        parser().error("--scans and --seed-scans must be at least 1, --warmup at least 0, --seed-scale above 0")
    require_checkout()
    from eco2_tools.bench import run
    from eco2_tools.bench.harness import wide_console

    return run.main(args, runtimes, wide_console(150), uuid.uuid4().hex[:8], dict(os.environ))


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:]))
