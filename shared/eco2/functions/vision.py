"""vision: eco2.scan.requested -> eco2.scan.classified, the photo classified by the model within the rule book's
vocabulary."""

from __future__ import annotations

from eco2.adapter import EventFunction
from eco2.events import Classification, ScanClassified, ScanRequested
from eco2.rules import MAJOR_CATEGORIES, RECYCLABLE_MAJOR, SITUATION_TAGS, UNCLASSIFIED_MAJOR, RuleBook
from eco2.stage_context import StageContext
from eco2.stages import Progress, Step, model_for, stage_function


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


async def classify(scan: ScanRequested, ctx: StageContext) -> Classification:
    raw = await ctx.model.classify(
        model=model_for(scan.model, ctx.settings.vision_model, ctx.settings),
        image_url=await ctx.readable_image(scan.image_url, scan.user_id),
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


STEP = Step("vision", ScanRequested, Classification, classify, classified, uses_model=True)


def function() -> EventFunction[StageContext]:
    return stage_function(STEP)
