"""Where a stage's CPU goes per event: py-spy samples `eco2 serve NAME` while events are POSTed to it, one at a time.

    .venv/bin/python -m tests.benchmarks.stage_profile vision [--seconds 20] [--rate 1000] [--top 40] [--out FILE]

The stage runs as in part 2 of tests.benchmarks.cpu (tests.benchmarks.cpu_stages: the manifest's command and env,
the stand-in model at zero latency, a job created per event). `py-spy record --gil` (py-spy is in the dev extra)
samples it only while it holds the GIL, i.e. while Python works: waits, and the kernel's share of a socket write,
are left out (ptrace stops a process in a syscall often enough to inflate those otherwise). Prints each function's
inclusive share of the samples, busiest first, and keeps py-spy's raw collapsed stacks (default
results/profile-NAME.raw) for a closer look or a flame graph. Benchmark jobs are deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import httpx

from eco2.jobs import JobStore
from eco2_tools.bench import harness
from eco2_tools.bench.processes import ROOT, cpu_seconds
from eco2_tools.manifests import Manifests
from tests.benchmarks.cpu import forget_jobs
from tests.benchmarks.cpu_stages import STAGES, prepared_posts, start_standin
from tests.benchmarks.functions import REDIS_URL, START_TIMEOUT, Rig, runner_env

BATCH = 200  # events prepared at a time (their jobs created: the benchmark's work, not the stage's)
LINE_NUMBER = re.compile(r":\d+\)$")


def inclusive_shares(raw: Path) -> tuple[int, Counter[str]]:
    """Samples in all, and per function (file, no line) the samples whose stack holds it."""
    total, shares = 0, Counter[str]()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in {LINE_NUMBER.sub(")", frame) for frame in stack.split(";")}:
            shares[frame] += int(count)
    return total, shares


async def profile(stage: str, seconds: float, rate: int, out: Path) -> tuple[int, float]:
    """Sample the stage for `seconds` while events go to it; the events sent and its CPU per event."""
    services = Manifests.load(ROOT).services
    with harness.workspace("eco2-profile-", 4096) as children:
        async with httpx.AsyncClient(timeout=START_TIMEOUT) as http:
            standin_url, _ = await start_standin(children, http, dict(os.environ))
            rig = Rig(children, http, services, runner_env(standin_url), standin_url)
            process, *_ = await rig.start(stage, "profile")
            store = JobStore.from_url(REDIS_URL, ttl_seconds=600)
            try:
                target = f"{rig.urls[process.pid]}/"
                for headers, body in await prepared_posts(rig, store, stage, 30):  # warm-up
                    await http.post(target, headers=headers, content=body)
                spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--gil", "-r", str(rate), "-f", "raw"]
                command = [*spy, "-p", str(process.pid), "-d", str(int(seconds)), "-o", str(out)]
                sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                sent, cpu = 0, cpu_seconds(process.pid) or 0.0
                while sampler.poll() is None:
                    for headers, body in await prepared_posts(rig, store, stage, BATCH):
                        response = await http.post(target, headers=headers, content=body)
                        if not 200 <= response.status_code < 300:
                            raise harness.BenchError(f"{stage} answered {response.status_code}")
                        sent += 1
                        if sampler.poll() is not None:
                            break
                spent = (cpu_seconds(process.pid) or 0.0) - cpu
                if sampler.returncode != 0:
                    error = sampler.stderr.read().decode(errors="replace") if sampler.stderr else ""
                    raise harness.BenchError(f"py-spy exited {sampler.returncode}: {error[-500:]}")
            finally:
                await forget_jobs(store)
                await store.aclose()
    return sent, spent / max(sent, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.argument_parser("stage_profile", __doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long py-spy samples (default 20)")
    parser.add_argument("--rate", type=int, default=1000, help="samples per second (default 1000)")
    parser.add_argument("--top", type=int, default=40, help="functions printed (default 40)")
    args = parser.parse_args(argv)
    raw = args.out if args.out.suffix == ".raw" else Path(f"results/profile-{args.stage}.raw")
    raw.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sent, cpu = asyncio.run(profile(args.stage, args.seconds, args.rate, raw))
    total, shares = inclusive_shares(raw)
    load = os.getloadavg()
    print(f"{args.stage}: {sent} events in {time.monotonic() - started:.0f} s, {cpu * 1000:.2f} ms CPU per event")
    print(f"(under py-spy), {total} samples holding the GIL, load average {load[0]:.2f}; raw stacks: {raw}")
    for frame, count in shares.most_common(args.top):
        print(f"{100 * count / total:6.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
