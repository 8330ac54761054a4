"""The skeleton the four scan stages share (each stage's own step is eco2.functions.<stage>).

Every stage runs the same skeleton (`run`): validate the data, drop the event of an ended job (done, failed,
cancelled) before any model call, compute the stage's output at most once per job (a checkpoint reused on
redelivery), record its transition (idempotent), and pass the next event on only if nothing after this stage
was recorded yet. `stage_function` serves a step over HTTP; the Celery mode chains the same steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from eco2.adapter import EventFunction
from eco2.capacity import CALL_PRIORITY
from eco2.errors import PoisonEvent
from eco2.events import (
    FUNCTION_EVENTS,
    ScanRequested,
    event_priority,
    new_event,
    parse_data,
)
from eco2.jobs import STAGE_OF_FUNCTION, Stage, Transition
from eco2.rules import (
    Rule,
    RuleBook,
)
from eco2.settings import Settings
from eco2.stage_context import ModelFunction, StageContext
from eco2.stage_work import Change, run_once

In = TypeVar("In", bound=ScanRequested)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a stage records on the job (message and SSE data) and the data of the event it passes on (None: the
    step sends its own, reward's final event)."""

    message: str
    data: dict[str, Any]
    reply: ScanRequested | None


@dataclass(frozen=True, slots=True)
class Step(Generic[In, Out]):
    """One stage: the data it consumes, the output it computes once, what it records, and what it passes on."""

    function: str
    consumes: type[In]
    output: type[Out]
    compute: Callable[[In, StageContext], Awaitable[Out]]
    # What to record with the output (the stage's own transition) and pass on.
    progress: Callable[[In, Out, StageContext], Progress]
    # Calls the model: its client (and the openai SDK's ~0.4 s of imports) is built at start, before readiness.
    uses_model: bool = False
    # Reads the character catalog: kept current in process from the catalog exchange.
    syncs_catalog: bool = False

    @property
    def stage(self) -> Stage:
        return STAGE_OF_FUNCTION[self.function]

    async def finish(
        self, scan: In, output: Out, done: Progress, recorded: Transition, ctx: StageContext, event: CloudEvent
    ) -> CloudEvent | None:
        """After the stage's transition (`done`) was recorded: the event to pass on, if any."""
        if not recorded.passes_on(self.stage) or done.reply is None:
            return None
        emits = FUNCTION_EVENTS[self.function][1][0]
        return new_event(emits, done.reply, source=ctx.source, job_id=scan.job_id, parent=event)


async def run(step: Step[Any, Any], event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    """The skeleton every stage shares."""
    scan = parse_data(event, step.consumes)
    CALL_PRIORITY.set(event_priority(event).value)  # the model call's place in the capacity queue
    planned: dict[int, Progress] = {}  # by the output it is for: computed once, recorded, then passed on

    async def compute() -> Any:
        return await step.compute(scan, ctx)

    def change(output: Any) -> Change:
        done = planned[id(output)] = step.progress(scan, output, ctx)
        return Change(scan.user_id, step.stage, done.message, done.data)

    # An ended job (done, failed, cancelled) has nothing left to do: its events are dropped before any model call.
    stored = await run_once(
        ctx.store,
        scan.job_id,
        step.stage,
        step.output,
        compute,
        change,
        timeout_seconds=ctx.settings.work_seconds,
    )
    if stored is None:
        return None
    output, recorded = stored
    return await step.finish(scan, output, planned[id(output)], recorded, ctx, event)


def model_for(requested: str | None, default: str, settings: Settings) -> str:
    """The model a scan asked for, checked against the allowed ones (poison before anything is spent)."""
    if requested is None:
        return default
    if requested not in settings.allowed_models:
        raise PoisonEvent("unknown_model", f"model {requested!r} is not one of {', '.join(settings.allowed_models)}")
    return requested


def rule_of(rule_id: str | None, book: RuleBook) -> Rule | None:
    if rule_id is None:
        return None
    rule = book.get(rule_id)
    if rule is None:
        raise PoisonEvent("unknown_rule", f"rule {rule_id!r} is not in the rule book")
    return rule


def stage_function(step: Step[Any, Any]) -> EventFunction[StageContext]:
    """A stage as functions/<name>/main.py serves it (eco2.functions.<name>); it accepts only its own event type."""
    served: EventFunction[StageContext]

    async def setup(settings: Settings) -> StageContext:
        context = await StageContext.create(settings, served.metrics)
        if step.syncs_catalog:
            context.sync_catalog()
        if step.uses_model:
            _ = context.model
        return context

    async def handle(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
        return await run(step, event, ctx)

    kind = ModelFunction if step.uses_model else EventFunction
    served = kind(step.function, setup, handle, accepts=FUNCTION_EVENTS[step.function][0])
    return served
