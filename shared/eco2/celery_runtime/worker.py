"""`eco2 worker --celery`: a Celery worker (gevent pool) running the pack's stages as the seed's chain.

Imports nothing before gevent has patched the standard library: `eco2_tools.cli` hands `worker` straight here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

DEFAULT_CONCURRENCY = 200  # the seed's gevent -c 200: I/O-bound tasks, one greenlet each


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eco2 worker", description="Run the scan stages as a Celery chain (the seed's runtime)."
    )
    parser.add_argument("--celery", action="store_true", required=True, help="the Celery runtime (the only one)")
    parser.add_argument(
        "--queues",
        default="",
        help="comma-separated tasks to consume: vision,rules,answer,reward,persist (default: all)",
    )
    parser.add_argument("--concurrency", "-c", type=int, default=DEFAULT_CONCURRENCY, help="greenlets (gevent -c)")
    parser.add_argument("--loglevel", default=os.environ.get("LOG_LEVEL", "INFO"), help="the worker's log level")
    return parser


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    if args.concurrency < 1:
        parser().error("--concurrency must be at least 1")
    from gevent import monkey

    monkey.patch_all()
    return run(args.queues, args.concurrency, args.loglevel.upper())


def run(queues: str, concurrency: int, loglevel: str) -> int:
    from celery import signals

    from eco2.celery_runtime.config import TASKS, CeleryConfig, make_app
    from eco2.celery_runtime.tasks import StageWorker, install
    from eco2.observability import configure_logging

    configure_logging("celery-worker", loglevel)
    config = CeleryConfig.from_env(os.environ)
    wanted = [name.strip() for name in queues.split(",") if name.strip()] or list(TASKS)
    unknown = sorted(set(wanted) - set(TASKS))
    if unknown:
        print(f"eco2 worker: unknown queue(s) {', '.join(unknown)}; known: {', '.join(TASKS)}", file=sys.stderr)
        return 2
    app = make_app(config)
    worker = StageWorker()
    install(app, config, worker)
    signals.worker_shutdown.connect(lambda **_: worker.stop(), weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=gevent",
            f"--concurrency={concurrency}",
            f"--queues={','.join(config.queue(name) for name in wanted)}",
            f"--hostname=eco2-{os.getpid()}@%h",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0
