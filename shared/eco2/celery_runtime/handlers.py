"""The pack's own handlers, per worker process: the four stages, persist and chat.

Each is built once, as its function builds itself at start (`EventFunction.start`: settings from the
environment, a Redis pool, the model client, the catalog sync for reward), and called through its public
entry point (`stages.run`, `functions.persist.persist`, `functions.chat.handle`) with the event the task was given.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.conversion import to_dict
from cloudevents.http import CloudEvent, from_dict

from eco2 import dead_letters, stages
from eco2.adapter import EventFunction
from eco2.celery_runtime.config import CHAT, PERSIST, STAGES, EventDict
from eco2.errors import PoisonEvent, TransientError
from eco2.events import FUNCTION_EVENTS, TERMINAL_EVENT_TYPES
from eco2.functions import answer, chat, reward, rules, vision
from eco2.functions import persist as persist_function
from eco2.jobs import TransitionOutcome
from eco2.observability import log_context

# What crosses a task boundary: a CloudEvent as its attributes plus `data` (cloudevents' to_dict).


@dataclass(frozen=True, slots=True)
class Handler:
    """How to build a function (its resources) and the entry point an event goes through."""

    build: Callable[[Mapping[str, str]], EventFunction[Any]]
    call: Callable[[CloudEvent, Any], Awaitable[CloudEvent | None]]
    accepts: frozenset[str]


# The four stages' steps, by function name: the same ones functions/<name>/main.py serve.
STEPS: dict[str, stages.Step[Any, Any]] = {m.STEP.function: m.STEP for m in (vision, rules, answer, reward)}


def _stage(name: str) -> Handler:
    step = STEPS[name]

    async def call(event: CloudEvent, context: Any) -> CloudEvent | None:
        return await stages.run(step, event, context)

    return Handler(lambda _: stages.stage_function(step), call, frozenset({FUNCTION_EVENTS[name][0]}))


async def _persist(event: CloudEvent, context: Any) -> CloudEvent | None:
    await persist_function.persist(event, context)
    return None


HANDLERS: dict[str, Handler] = {
    **{name: _stage(name) for name in STAGES},
    PERSIST: Handler(persist_function.function, _persist, frozenset(TERMINAL_EVENT_TYPES)),
    CHAT: Handler(lambda _: chat.function(), chat.handle, frozenset({FUNCTION_EVENTS[CHAT][0]})),
}


def decode(raw: object) -> CloudEvent:
    if not isinstance(raw, dict):
        raise PoisonEvent("invalid_event", "a task's event must be a JSON object")
    try:
        return from_dict(raw)
    except Exception:
        raise PoisonEvent("invalid_event", "the task's event is not a CloudEvent") from None


def encode(event: CloudEvent) -> EventDict:
    return to_dict(event)


class Handlers:
    """The functions this worker runs, started on first use and stopped with the worker."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        self._functions: dict[str, EventFunction[Any]] = {}

    async def context(self, name: str) -> Any:
        """The function's per-process resources (its StageContext, PersistContext), built on first use."""
        if name not in self._functions:
            self._functions[name] = HANDLERS[name].build(self.env)
        return await self._functions[name].start(self.env)

    async def handle(self, name: str, raw: object) -> EventDict | None:
        """The event `name` passes on (None: nothing); PoisonEvent / TransientError as its function raises them."""
        handler, event = HANDLERS[name], decode(raw)
        if event["type"] not in handler.accepts:
            raise PoisonEvent("unexpected_type", f"{name} does not accept {event['type']}")
        context = await self.context(name)
        settings = self._functions[name].settings
        with log_context(event.get("subject"), event.get("traceparent")):
            try:
                # The budget the HTTP adapter gives a delivery: the stage's own, plus its writes' grace.
                async with asyncio.timeout(settings.work_seconds + settings.store_grace_seconds):
                    reply = await handler.call(event, context)
            except TimeoutError:
                raise TransientError("timeout", "the stage ran out of time") from None
        return None if reply is None else encode(reply)

    async def stop(self) -> None:
        for function in self._functions.values():
            await function.stop()
        self._functions.clear()


async def fail_live_job(handlers: Handlers, name: str, raw: object, status: str) -> bool:
    """Fail the job whose live work a given-up task was (as the dead-letter sink does); True if it was failed."""
    if name == PERSIST or not isinstance(raw, dict):
        return False
    attributes = {key: str(value) for key, value in raw.items() if key != "data"}
    job_id = dead_letters.live_job(attributes)
    if job_id is None:
        return False
    data = raw.get("data")
    user_id = str(data.get("user_id", "")) if isinstance(data, dict) else ""
    context = await handlers.context(name)
    failed = await dead_letters.fail_job(context.store, job_id, user_id, attributes["type"], status)
    return failed.outcome is TransitionOutcome.APPLIED
