"""The `eco2` console script: `serve` and `worker` are the pods' own; every other command is the workshop's.

`eco2 serve NAME` is the container command of every Knative Service and `eco2 worker --celery` the Celery mode's,
so both go straight to their module without a CLI framework. The developer's and operator's commands (`up`,
`bench`, `token`, `dlq`, ...) live in the eco2-tools distribution, which registers itself under the entry-point
group `eco2.commands`; the image does not install it, and says so instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

SERVE = "serve"
WORKER = "worker"  # gevent must patch the standard library before anything else loads
COMMAND_GROUP = "eco2.commands"
# The `worker` extra's top-level modules: the functions' image leaves them out (Containerfile, target worker).
WORKER_PACKAGES = frozenset({"celery", "kombu", "billiard", "gevent"})
WORKER_MISSING = """eco2 worker: {} is not installed. The Celery worker mode has its own image (Containerfile,
`--target worker`); in a checkout, install the project's `worker` extra."""
USAGE = """usage: eco2 serve NAME [--host H] [--port P]   serve one function (functions/NAME/main.py)
       eco2 worker --celery [...]                 run the stages as a Celery chain
The other commands (up, status, down, bench, token, scan, dlq, catalog, revoke, model-standin, ...) come with
eco2-tools, which this installation does not have: install the project with its `local` extra (README)."""


def main() -> None:
    """The console script's entry point (`eco2 = "eco2.command:main"`)."""
    argv = sys.argv[1:]
    if argv[:1] == [SERVE]:
        from eco2 import serving

        sys.exit(serving.main(argv[1:]))
    if argv[:1] == [WORKER]:
        sys.exit(_worker(argv[1:]))
    workshop = workshop_commands()
    if workshop is None:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if argv[:1] in ([], ["--help"], ["-h"]) else 2)
    workshop(argv)


def _worker(argv: list[str]) -> int:
    """`eco2 worker`, or a plain message where the worker extra is not installed (gevent loads inside main)."""
    try:
        from eco2.celery_runtime import worker

        return worker.main(argv)
    except ModuleNotFoundError as missing:
        if missing.name not in WORKER_PACKAGES:
            raise
        print(WORKER_MISSING.format(missing.name), file=sys.stderr)
        return 2


def workshop_commands() -> Callable[[Sequence[str]], None] | None:
    """The installed workshop's command runner, if any (an entry point: the pods' package never imports it)."""
    for entry in entry_points(group=COMMAND_GROUP):
        runner: Callable[[Sequence[str]], None] = entry.load()
        return runner
    return None
