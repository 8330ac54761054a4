"""The four scan stages: vision, rules, answer, reward. Each takes an event and returns the next one.

The functions under `functions/` serve these over HTTP; the Celery baseline chains the same handlers.
Every stage checks its checkpoint first (no second model call on redelivery), records its transition
in the job store (idempotent), and drops the event without work when the job was cancelled or failed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from eco2.errors import PoisonEvent
from eco2.events import (
    Classification,
    EventType,
    FinalAnswer,
    GrantedCharacter,
    RewardGranted,
    ScanAnswered,
    ScanClassified,
    ScanRequested,
    ScanRuled,
    new_event,
    parse_data,
    source_of,
)
from eco2.jobs import JobStatus, JobStore, Stage, TransitionOutcome
from eco2.model import CLASSIFY_SYSTEM_PROMPT, ModelClient
from eco2.rules import (
    MAJOR_CATEGORIES,
    RECYCLABLE_MAJOR,
    SITUATION_TAGS,
    UNCLASSIFIED_MAJOR,
    CharacterCatalog,
    Rule,
    RuleBook,
)
from eco2.settings import Settings

# Namespace for reward ids: one reward per (user, character), whatever job earned it.
_REWARD_NAMESPACE = uuid.UUID("0b7d3c52-8f7e-4a36-9d0e-2f1e6c5a9b10")
_DROP_STATUSES = frozenset({JobStatus.CANCELLED, JobStatus.FAILED})


@dataclass(slots=True)
class StageContext:
    """Per-process resources of a stage function: built once at start, closed on shutdown."""

    settings: Settings
    store: JobStore
    rules: RuleBook
    characters: CharacterCatalog
    classify_prompt: str
    _model: ModelClient | None = None

    @classmethod
    async def create(cls, settings: Settings) -> StageContext:
        rules = RuleBook.load()
        return cls(
            settings=settings,
            store=JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds),
            rules=rules,
            characters=CharacterCatalog.load(),
            classify_prompt=CLASSIFY_SYSTEM_PROMPT.format(
                majors=", ".join(MAJOR_CATEGORIES),
                middles=", ".join(rules.middle_categories()),
                tags=", ".join(SITUATION_TAGS),
            ),
        )

    @property
    def model(self) -> ModelClient:
        # Built on first use: only vision and answer call a model, so only they load the openai SDK.
        if self._model is None:
            self._model = ModelClient(
                base_url=self.settings.openai_base_url,
                api_key=self.settings.openai_api_key,
                timeout_seconds=self.settings.stage_timeout_seconds,
            )
        return self._model

    async def aclose(self) -> None:
        if self._model is not None:
            await self._model.aclose()
        await self.store.aclose()

    @property
    def source(self) -> str:
        return source_of(self.settings.function_name)

    async def should_drop(self, job_id: str) -> bool:
        return await self.store.status(job_id) in _DROP_STATUSES


class RuleOutcome(BaseModel):
    rule_id: str | None


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
    if requested is None:
        return default
    if requested not in settings.allowed_models:
        raise PoisonEvent("unknown_model", f"model {requested!r} is not one of {', '.join(settings.allowed_models)}")
    return requested


async def vision(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    scan = parse_data(event, ScanRequested)
    if await ctx.should_drop(scan.job_id):
        return None
    model = model_for(scan.model, ctx.settings.vision_model, ctx.settings)

    async def classify() -> Classification:
        raw = await ctx.model.classify(
            model=model,
            image_url=scan.image_url,
            user_input=scan.user_input,
            system_prompt=ctx.classify_prompt,
            job_id=scan.job_id,
        )
        return normalize_classification(raw, ctx.rules)

    classification = await ctx.store.once(
        scan.job_id,
        Stage.VISION,
        Classification,
        classify,
        timeout_seconds=ctx.settings.stage_timeout_seconds,
    )
    label = classification.middle_category or classification.major_category
    recorded = await ctx.store.transition(
        scan.job_id,
        scan.user_id,
        Stage.VISION,
        JobStatus.RUNNING,
        message=f"사진을 분류했어요: {label}",
        data={"classification": classification.model_dump(mode="json")},
    )
    if recorded.outcome is TransitionOutcome.REFUSED:
        return None
    reply = ScanClassified(**scan.model_dump(), classification=classification)
    return new_event(EventType.SCAN_CLASSIFIED, reply, source=ctx.source, job_id=scan.job_id, parent=event)


async def rules(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    scan = parse_data(event, ScanClassified)
    if await ctx.should_drop(scan.job_id):
        return None

    async def match() -> RuleOutcome:
        found = ctx.rules.match(scan.classification.major_category, scan.classification.middle_category)
        return RuleOutcome(rule_id=found.id if found else None)

    outcome = await ctx.store.once(
        scan.job_id, Stage.RULE, RuleOutcome, match, timeout_seconds=ctx.settings.stage_timeout_seconds
    )
    rule = ctx.rules.get(outcome.rule_id) if outcome.rule_id else None
    recorded = await ctx.store.transition(
        scan.job_id,
        scan.user_id,
        Stage.RULE,
        JobStatus.RUNNING,
        message=f"배출 규칙을 찾았어요: {rule.display_name}" if rule else "맞는 배출 규칙이 없어요",
        data={"rule_id": outcome.rule_id},
    )
    if recorded.outcome is TransitionOutcome.REFUSED:
        return None
    reply = ScanRuled(**scan.model_dump(), rule_id=outcome.rule_id)
    return new_event(EventType.SCAN_RULED, reply, source=ctx.source, job_id=scan.job_id, parent=event)


def rule_of(rule_id: str | None, book: RuleBook) -> Rule | None:
    if rule_id is None:
        return None
    rule = book.get(rule_id)
    if rule is None:
        raise PoisonEvent("unknown_rule", f"rule {rule_id!r} is not in the rule book")
    return rule


async def answer(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    scan = parse_data(event, ScanRuled)
    if await ctx.should_drop(scan.job_id):
        return None
    rule = rule_of(scan.rule_id, ctx.rules)
    model = model_for(scan.model, ctx.settings.answer_model, ctx.settings)

    async def write() -> FinalAnswer:
        return await ctx.model.answer(
            model=model,
            classification=scan.classification,
            disposal_rules=rule.as_disposal_rules() if rule else None,
            user_input=scan.user_input,
            job_id=scan.job_id,
        )

    final = await ctx.store.once(
        scan.job_id, Stage.ANSWER, FinalAnswer, write, timeout_seconds=ctx.settings.stage_timeout_seconds
    )
    recorded = await ctx.store.transition(
        scan.job_id,
        scan.user_id,
        Stage.ANSWER,
        JobStatus.RUNNING,
        message="답변을 작성했어요",
        data={"final_answer": final.model_dump(mode="json")},
    )
    if recorded.outcome is TransitionOutcome.REFUSED:
        return None
    reply = ScanAnswered(**scan.model_dump(), final_answer=final)
    return new_event(EventType.SCAN_ANSWERED, reply, source=ctx.source, job_id=scan.job_id, parent=event)


@dataclass(frozen=True, slots=True)
class RewardDecision:
    character: GrantedCharacter | None
    reason: str  # machine-readable: granted, not_recyclable, no_rule, insufficient, no_character
    message: str


def decide_reward(scan: ScanAnswered, rule: Rule | None, catalog: CharacterCatalog) -> RewardDecision:
    """Only a recyclable item, with a rule found and nothing insufficient, earns its category's character."""
    if scan.classification.major_category != RECYCLABLE_MAJOR:
        return RewardDecision(None, "not_recyclable", "재활용 대상이 아니어서 캐릭터는 지급되지 않았어요")
    if rule is None:
        return RewardDecision(None, "no_rule", "배출 규칙을 찾지 못해 캐릭터는 지급되지 않았어요")
    if scan.final_answer.insufficiencies or rule.insufficiencies(scan.classification.situation_tags):
        return RewardDecision(None, "insufficient", "배출 준비가 부족해서 이번에는 캐릭터가 지급되지 않았어요")
    middle = scan.classification.middle_category or ""
    character = catalog.for_middle_category(middle)
    if character is None:
        return RewardDecision(None, "no_character", "이 품목에는 아직 캐릭터가 없어요")
    granted = GrantedCharacter(character_id=character.character_id, name=character.name, middle_category=middle)
    return RewardDecision(granted, "granted", f"잘 분리배출했어요! {character.name} 캐릭터를 얻었어요")


def reward_id(user_id: str, character_id: str) -> str:
    return str(uuid.uuid5(_REWARD_NAMESPACE, f"{user_id}/{character_id}"))


def final_result(scan: ScanAnswered, rule: Rule | None, decision: RewardDecision) -> dict[str, object]:
    """The finished job's result, in the shape of the mobile API (`pipeline_result`, `reward`)."""
    return {
        "pipeline_result": {
            "classification": scan.classification.model_dump(mode="json"),
            "disposal_rules": rule.as_disposal_rules() if rule else None,
            "final_answer": scan.final_answer.model_dump(mode="json"),
        },
        "reward": decision.character.model_dump(mode="json") if decision.character else None,
        "reward_reason": decision.reason,
    }


async def reward(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    scan = parse_data(event, ScanAnswered)
    if await ctx.should_drop(scan.job_id):
        return None
    rule = rule_of(scan.rule_id, ctx.rules)
    decision = decide_reward(scan, rule, ctx.characters)
    result = final_result(scan, rule, decision)
    await ctx.store.transition(
        scan.job_id,
        scan.user_id,
        Stage.REWARD,
        JobStatus.RUNNING,
        message=decision.message,
        data={"reward": result["reward"], "reward_reason": decision.reason},
    )
    done = await ctx.store.transition(
        scan.job_id,
        scan.user_id,
        Stage.DONE,
        JobStatus.DONE,
        message="완료되었어요",
        data={"result": result},
        fields={"result": json.dumps(result, ensure_ascii=False)},
    )
    if done.outcome is TransitionOutcome.REFUSED or decision.character is None:
        return None
    granted = RewardGranted(
        reward_id=reward_id(scan.user_id, decision.character.character_id),
        job_id=scan.job_id,
        user_id=scan.user_id,
        character=decision.character,
    )
    return new_event(EventType.REWARD_GRANTED, granted, source=ctx.source, job_id=scan.job_id, parent=event)
