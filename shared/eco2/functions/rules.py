"""rules: eco2.scan.classified -> eco2.scan.ruled, the disposal rule of the classified item (none: rule_id null)."""

from __future__ import annotations

from pydantic import BaseModel

from eco2.adapter import EventFunction
from eco2.classify import rule_for
from eco2.events import ScanClassified, ScanRuled
from eco2.stage_context import StageContext
from eco2.stages import Progress, Step, stage_function


class RuleOutcome(BaseModel):
    rule_id: str | None


async def match_rule(scan: ScanClassified, ctx: StageContext) -> RuleOutcome:
    found = rule_for(scan.classification, ctx.rules)
    return RuleOutcome(rule_id=found.id if found else None)


def ruled(scan: ScanClassified, outcome: RuleOutcome, ctx: StageContext) -> Progress:
    rule = ctx.rules.get(outcome.rule_id) if outcome.rule_id else None
    return Progress(
        f"배출 규칙을 찾았어요: {rule.display_name}" if rule else "맞는 배출 규칙이 없어요",
        {"rule_id": outcome.rule_id},
        ScanRuled(**scan.model_dump(), rule_id=outcome.rule_id),
    )


STEP = Step("rules", ScanClassified, RuleOutcome, match_rule, ruled)


def function() -> EventFunction[StageContext]:
    return stage_function(STEP)
