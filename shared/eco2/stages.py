"""The four scan stages: vision, rules, answer, reward. Each takes an event and returns the next one.

Every stage runs the same skeleton (`run`): validate the data, drop the event of an ended job (done, failed,
cancelled) before any model call, compute the stage's output at most once per job (a checkpoint reused on
redelivery), record its transition (idempotent), and pass the next event on only if nothing after this stage
was recorded yet. The functions under `functions/` serve these over HTTP; the Celery baseline chains the same steps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from eco2 import default_character, keys
from eco2.adapter import EventFunction
from eco2.errors import PoisonEvent
from eco2.events import (
    FUNCTION_EVENTS,
    Classification,
    EventType,
    FinalAnswer,
    RewardGranted,
    ScanAnswered,
    ScanClassified,
    ScanRequested,
    ScanRuled,
    new_event,
    parse_data,
)
from eco2.jobs import STAGE_OF_FUNCTION, Claim, JobStatus, Stage, Transition, TransitionOutcome
from eco2.rewards import RewardDecision, decide_reward, final_event_data, final_result, reward_id
from eco2.rules import (
    MAJOR_CATEGORIES,
    RECYCLABLE_MAJOR,
    SITUATION_TAGS,
    UNCLASSIFIED_MAJOR,
    Rule,
    RuleBook,
)
from eco2.settings import Settings
from eco2.stage_context import ModelFunction, StageContext
from eco2.stage_work import Change, DeltaWriter, record_done, run_once

# How long a granted reward id is remembered, so eco2.reward.granted goes out once per reward.
REWARD_CLAIM_SECONDS = 30 * 24 * 3600


class RuleOutcome(BaseModel):
    rule_id: str | None


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
        timeout_seconds=ctx.settings.stage_timeout_seconds,
    )
    if stored is None:
        return None
    output, recorded = stored
    return await step.finish(scan, output, planned[id(output)], recorded, ctx, event)


def normalize_classification(raw: Classification, rules: RuleBook) -> Classification:
    """Keep the model inside the known vocabulary: unknown categories become 미분류, unknown tags are dropped."""
    major = raw.major_category if raw.major_category in MAJOR_CATEGORIES else UNCLASSIFIED_MAJOR
    middle = raw.middle_category if major == RECYCLABLE_MAJOR else None
    if major == RECYCLABLE_MAJOR and middle not in rules.middle_categories():
        major, middle = UNCLASSIFIED_MAJOR, None
    tags = tuple(dict.fromkeys(tag for tag in raw.situation_tags if tag in SITUATION_TAGS))
    return Classification(
        major_category=major, middle_category=middle, minor_category=raw.minor_category, situation_tags=tags
    )


def model_for(requested: str | None, default: str, settings: Settings) -> str:
    """The model a scan asked for, checked against the allowed ones (poison before anything is spent)."""
    if requested is None:
        return default
    if requested not in settings.allowed_models:
        raise PoisonEvent("unknown_model", f"model {requested!r} is not one of {', '.join(settings.allowed_models)}")
    return requested


async def classify(scan: ScanRequested, ctx: StageContext) -> Classification:
    raw = await ctx.model.classify(
        model=model_for(scan.model, ctx.settings.vision_model, ctx.settings),
        image_url=ctx.readable_image(scan.image_url),
        user_input=scan.user_input,
        system_prompt=ctx.classify_prompt,
        job_id=scan.job_id,
    )
    return normalize_classification(raw, ctx.rules)


def classified(scan: ScanRequested, classification: Classification, ctx: StageContext) -> Progress:
    label = classification.middle_category or classification.major_category
    return Progress(
        f"사진을 분류했어요: {label}",
        {"classification": classification.model_dump(mode="json")},
        ScanClassified(**scan.model_dump(), classification=classification),
    )


async def match_rule(scan: ScanClassified, ctx: StageContext) -> RuleOutcome:
    found = ctx.rules.match(scan.classification.major_category, scan.classification.middle_category)
    return RuleOutcome(rule_id=found.id if found else None)


def ruled(scan: ScanClassified, outcome: RuleOutcome, ctx: StageContext) -> Progress:
    rule = ctx.rules.get(outcome.rule_id) if outcome.rule_id else None
    return Progress(
        f"배출 규칙을 찾았어요: {rule.display_name}" if rule else "맞는 배출 규칙이 없어요",
        {"rule_id": outcome.rule_id},
        ScanRuled(**scan.model_dump(), rule_id=outcome.rule_id),
    )


def rule_of(rule_id: str | None, book: RuleBook) -> Rule | None:
    if rule_id is None:
        return None
    rule = book.get(rule_id)
    if rule is None:
        raise PoisonEvent("unknown_rule", f"rule {rule_id!r} is not in the rule book")
    return rule


async def write_answer(scan: ScanRuled, ctx: StageContext) -> FinalAnswer:
    """The model's answer, its `user_answer` streamed to the job's SSE stream (delta events) as it is written."""
    rule = rule_of(scan.rule_id, ctx.rules)
    async with DeltaWriter(ctx.store, scan.job_id, Stage.ANSWER, JobStatus.RUNNING) as on_text:
        return await ctx.model.answer(
            model=model_for(scan.model, ctx.settings.answer_model, ctx.settings),
            classification=scan.classification,
            disposal_rules=rule.as_disposal_rules() if rule else None,
            user_input=scan.user_input,
            job_id=scan.job_id,
            on_text=on_text,
        )


def answered(scan: ScanRuled, final: FinalAnswer, ctx: StageContext) -> Progress:
    return Progress(
        "답변을 작성했어요",
        {"final_answer": final.model_dump(mode="json")},
        ScanAnswered(**scan.model_dump(), final_answer=final),
    )


async def decide(scan: ScanAnswered, ctx: StageContext) -> RewardDecision:
    decision = decide_reward(scan, rule_of(scan.rule_id, ctx.rules), ctx.characters)
    if decision.character is not None:
        return decision
    default = await default_character.still_missing(scan.user_id, ctx.characters, ctx.store.redis, reward_id)
    if default is None:
        return decision
    return RewardDecision(character=default, reason="default", message=f"첫 스캔 선물로 {default.name}를 받았어요")


def rewarded(scan: ScanAnswered, decision: RewardDecision, ctx: StageContext) -> Progress:
    result = final_result(scan, rule_of(scan.rule_id, ctx.rules), decision)
    return Progress(decision.message, {"reward": result["reward"], "reward_reason": decision.reason}, None)


class RewardStep(Step[ScanAnswered, RewardDecision]):
    """The last stage: records the reward, then `done` with the result; a reward id is passed on once, ever."""

    async def finish(
        self,
        scan: ScanAnswered,
        decision: RewardDecision,
        done: Progress,
        recorded: Transition,
        ctx: StageContext,
        event: CloudEvent,
    ) -> CloudEvent | None:
        result = final_result(scan, rule_of(scan.rule_id, ctx.rules), decision)
        character = decision.character
        claim = None
        if character is not None:
            claim = Claim(
                keys.reward(reward_id(scan.user_id, character.character_id)), scan.job_id, REWARD_CLAIM_SECONDS
            )
        ended = await record_done(
            ctx.store,
            scan.job_id,
            scan.user_id,
            Stage.DONE,
            result,
            message="완료되었어요",
            data={"result": result},
            claim=claim,
        )
        if ended.outcome is not TransitionOutcome.APPLIED:
            # A concurrent redelivery (the delivery that recorded `done` sends the final event), a job that ended
            # otherwise (cancelled, failed) while this ran, one of another user, or no job at all (an event
            # curl'd in or forged): nothing to pass on, so nothing is granted or persisted.
            return None
        # The job's one final event, for the persist function. reward.granted only from the delivery that claimed
        # the reward id: another scan of the same character, or a job curl'd in again, never grants it again
        # (persist dedupes on reward_id, and on job_id for the history, all the same).
        data = final_event_data(scan, decision, ended.claimed)
        emits = EventType.REWARD_GRANTED if isinstance(data, RewardGranted) else EventType.SCAN_COMPLETED
        return new_event(emits, data, source=ctx.source, job_id=scan.job_id, parent=event)


STEPS: dict[str, Step[Any, Any]] = {
    "vision": Step("vision", ScanRequested, Classification, classify, classified, uses_model=True),
    "rules": Step("rules", ScanClassified, RuleOutcome, match_rule, ruled),
    "answer": Step("answer", ScanRuled, FinalAnswer, write_answer, answered, uses_model=True),
    "reward": RewardStep("reward", ScanAnswered, RewardDecision, decide, rewarded),
}


def function(name: str) -> EventFunction[StageContext]:
    """The stage function `name`, as functions/<name>/main.py serves it; it accepts only its own event type."""
    step = STEPS[name]
    served: EventFunction[StageContext]

    async def setup(settings: Settings) -> StageContext:
        context = await StageContext.create(settings, served.metrics)
        if name == "reward":
            context.sync_catalog()
        if step.uses_model:
            _ = context.model
        return context

    async def handle(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
        return await run(step, event, ctx)

    kind = ModelFunction if step.uses_model else EventFunction
    served = kind(name, setup, handle, accepts=FUNCTION_EVENTS[name][0])
    return served
