"""What the long-lived parts of a function process share to start and stop: the started resource, a
background task stopped and waited for."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

T = TypeVar("T")


def started(resource: T | None, what: str) -> T:
    """The resource `start()` built; asking before it ran is a programming error."""
    if resource is None:
        raise RuntimeError(f"{what} has not started")
    return resource


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped (its cancellation is the expected end)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
