"""vision: eco2.scan.requested -> eco2.scan.classified, the photo classified by the model within the rule book's
vocabulary."""

from __future__ import annotations

from eco2.adapter import EventFunction
from eco2.classify import classify_photo
from eco2.events import Classification, ScanClassified, ScanRequested
from eco2.stage_context import StageContext
from eco2.stages import Progress, Step, model_for, stage_function


async def classify(scan: ScanRequested, ctx: StageContext) -> Classification:
    return await classify_photo(
        ctx,
        image_url=scan.image_url,
        user_id=scan.user_id,
        user_input=scan.user_input,
        model=model_for(scan.model, ctx.settings.vision_model, ctx.settings),
        job_id=scan.job_id,
    )


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
