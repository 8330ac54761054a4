"""What a photo is and which rule holds for it: the vision and rules steps' computations, shared with chat.

vision classifies a scan's photo (`classify_photo`, kept inside the rule book's vocabulary), rules finds the
disposal rule of a classification (`rule_for`); chat runs the same two on a message's photo, so its answer is
grounded in the very rule a scan of that photo gives.
"""

from __future__ import annotations

from eco2.events import Classification
from eco2.rules import MAJOR_CATEGORIES, RECYCLABLE_MAJOR, SITUATION_TAGS, UNCLASSIFIED_MAJOR, Rule, RuleBook
from eco2.stage_context import StageContext


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


async def classify_photo(
    ctx: StageContext, *, image_url: str, user_id: str, user_input: str | None, model: str, job_id: str
) -> Classification:
    """The model's classification of the user's photo (read as the image rules allow), normalized."""
    raw = await ctx.model.classify(
        model=model,
        image_url=await ctx.readable_image(image_url, user_id),
        user_input=user_input,
        system_prompt=ctx.classify_prompt,
        job_id=job_id,
    )
    return normalize_classification(raw, ctx.rules)


def rule_for(classification: Classification, rules: RuleBook) -> Rule | None:
    """The disposal rule of what was classified; None when the rule book has none for it."""
    return rules.match(classification.major_category, classification.middle_category)
