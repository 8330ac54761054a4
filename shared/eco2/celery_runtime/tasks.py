"""The chain's tasks: one per stage and one for persist, each on its own queue, retried as the seed retried.

A task gets the event the task before it returned (None: that stage passed nothing on, so neither does
this one). A transient error (model 429/5xx, Redis away, a timeout, a crash) is retried after the configured
delays (the seed's 10 s, 60 s, 300 s); a poison event (any other 4xx) is never retried. A task given up on
fails its job when it was the job's live work, as the pack's dead-letter sink does (SSE ends `failed`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from eco2.celery_runtime.config import TASKS, CeleryConfig, EventDict
from eco2.celery_runtime.handlers import Handlers, fail_live_job
from eco2.celery_runtime.loop import GeventLoop
from eco2.errors import Eco2Error

log = logging.getLogger("eco2.celery")


class StageWorker:
    """This process's handlers and the one asyncio loop they run on, both made on the first task."""

    def __init__(self) -> None:
        self.handlers = Handlers()
        self._loop: GeventLoop | None = None

    @property
    def loop(self) -> GeventLoop:
        if self._loop is None:
            self._loop = GeventLoop()
        return self._loop

    def handle(self, name: str, event: object) -> EventDict | None:
        return self.loop.run(self.handlers.handle(name, event))

    def give_up(self, name: str, event: object, status: str) -> None:
        try:
            failed = self.loop.run(fail_live_job(self.handlers, name, event, status))
        except Exception:
            log.exception("could not fail the job of a given-up task", extra={"fields": {"task": name}})
            return
        log.warning("task given up", extra={"fields": {"task": name, "status": status, "job_failed": failed}})

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.run(self.handlers.stop())
            self._loop.close()
            self._loop = None


def install(app: Celery, config: CeleryConfig, worker: StageWorker) -> None:
    for name in TASKS:
        _install(app, config, name, worker)


def _install(app: Celery, config: CeleryConfig, name: str, worker: StageWorker) -> None:
    delays = config.retry_delays

    @app.task(name=config.task_name(name), bind=True, max_retries=len(delays))  # type: ignore[untyped-decorator]
    def run(task: Task, event: Any) -> EventDict | None:
        if event is None:
            return None
        try:
            return worker.handle(name, event)
        except Exception as exc:
            status = failure_status(exc)
            if status == POISON:
                worker.give_up(name, event, str(getattr(exc, "status", 422)))
                raise
            if not isinstance(exc, Eco2Error):
                log.exception("task crashed", extra={"fields": {"task": name}})
            retries = int(task.request.retries)
            if retries < len(delays):
                raise task.retry(exc=exc, countdown=delays[retries]) from None
            worker.give_up(name, event, status)
            raise


POISON = "poison"


def failure_status(exc: Exception) -> str:
    """`poison` for an error no retry can fix (a 4xx but 408/429, as the broker judges one), else the status."""
    if not isinstance(exc, Eco2Error):
        return "500"  # a crash: the adapter answers 500, which the broker retries
    if 400 <= exc.status < 500 and exc.status not in (408, 429):
        return POISON
    return str(exc.status)
