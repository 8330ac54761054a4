"""answer: eco2.scan.ruled -> eco2.scan.answered, the model's answer, its text streamed to the job as it comes."""

from __future__ import annotations

from eco2.adapter import EventFunction
from eco2.events import FinalAnswer, ScanAnswered, ScanRuled
from eco2.jobs import JobStatus, Stage
from eco2.stage_context import StageContext
from eco2.stage_work import DeltaWriter
from eco2.stages import Progress, Step, model_for, rule_of, stage_function


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


STEP = Step("answer", ScanRuled, FinalAnswer, write_answer, answered, uses_model=True)


def function() -> EventFunction[StageContext]:
    return stage_function(STEP)
