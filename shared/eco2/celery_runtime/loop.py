"""One asyncio loop per worker process, run inside gevent, for the pack's async stage handlers.

Celery's gevent pool runs each task in a greenlet; the stage handlers are coroutines bound to per-process
clients (a Redis pool, the model client). One event loop, on gevent's selector, runs in its own greenlet and
owns those clients; a task greenlet hands it a coroutine and sleeps (cooperatively) until it is done. One
loop, not one per greenlet: asyncio allows a single running loop per thread, and greenlets share the thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.selectors

T = TypeVar("T")


class GeventLoop:
    def __init__(self) -> None:
        self.loop = asyncio.SelectorEventLoop(gevent.selectors.DefaultSelector())
        self._greenlet = gevent.spawn(self.loop.run_forever)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop; blocks only the calling greenlet. Not from the loop's own greenlet."""
        # run_coroutine_threadsafe wakes the loop's selector (its self-pipe); a plain create_task would not.
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        done = gevent.event.Event()
        future.add_done_callback(lambda _: done.set())
        done.wait()
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._greenlet.join(timeout=5)
