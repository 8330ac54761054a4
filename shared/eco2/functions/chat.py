"""The chat function: answers a user's question with the model, grounded in the rule book, streaming its text.

eco2.chat.requested (from POST /api/v1/chat) → the rule goes into the system prompt: with a photo, the rule of
what the photo shows, found as a scan finds it (classified by the vision model, then matched in the rule book:
eco2.classify, the vision and rules steps' own code); else the rule the message names
(eco2.rules.RuleBook.match_text), or the last one this session talked about. The model's reply streams into the
job's event stream as `delta` events (so the SSE client sees it grow) and ends with (chat, done) carrying the
whole answer and, with a photo, what it was classified as. The session's turns are kept in Redis (a list per
user and session, with a TTL) and sent as history. Run at most once per job (a checkpoint reused on
redelivery: the photo is classified once too); a turn is remembered once, by the delivery that recorded the
answer.
"""

from __future__ import annotations

import json
from typing import Any

from cloudevents.http import CloudEvent
from pydantic import BaseModel

from eco2 import keys
from eco2.adapter import EventFunction
from eco2.capacity import CALL_PRIORITY
from eco2.classify import classify_photo, rule_for
from eco2.errors import store_call
from eco2.events import FUNCTION_EVENTS, ChatRequested, Classification, event_priority, parse_data
from eco2.jobs import JobStatus, Stage, TransitionOutcome
from eco2.rules import Rule
from eco2.settings import Settings
from eco2.stage_context import ModelFunction, StageContext
from eco2.stage_work import Change, DeltaWriter, run_once

# Turns (a user message and its answer are two) sent back to the model, and kept per session.
HISTORY_MESSAGES = 20
HISTORY_TTL_SECONDS = 24 * 3600
# The stand-in reads the grounding rule after this marker (eco2_tools.standin.replies.RULE_MARKER, the same text).
RULE_MARKER = "RULE_JSON:"
CHAT_SYSTEM_PROMPT = (
    "당신은 이코에코의 친절한 분리배출 도우미입니다. 짧고 정확한 한국어로 답하세요. 아래에 배출 규칙이 "
    "있으면 그 규칙에만 근거해 답하고, 규칙에 없는 내용은 추측하지 말고 모른다고 말하세요."
)


class ChatAnswer(BaseModel):
    text: str
    rule_id: str | None
    classification: Classification | None = None  # what the message's photo was classified as


async def history(ctx: StageContext, request: ChatRequested) -> list[dict[str, str]]:
    raw = await store_call(ctx.store.redis.lrange(keys.chat_history(request.user_id, request.session_id), 0, -1))
    return [json.loads(item) for item in raw or []]


async def remember(ctx: StageContext, request: ChatRequested, answer: ChatAnswer) -> None:
    key = keys.chat_history(request.user_id, request.session_id)
    turns = [
        {"role": "user", "content": request.message},
        {"role": "assistant", "content": answer.text, **({"rule_id": answer.rule_id} if answer.rule_id else {})},
    ]
    pipe = ctx.store.redis.pipeline(transaction=True)
    pipe.rpush(key, *(json.dumps(turn, ensure_ascii=False) for turn in turns))
    pipe.ltrim(key, -HISTORY_MESSAGES, -1)
    pipe.expire(key, HISTORY_TTL_SECONDS)
    await store_call(pipe.execute())


async def seen(ctx: StageContext, request: ChatRequested) -> Classification | None:
    """What the message's photo shows, classified as the vision step classifies a scan's; None without a photo."""
    if request.image_url is None:
        return None
    return await classify_photo(
        ctx,
        image_url=request.image_url,
        user_id=request.user_id,
        user_input=request.message,
        model=ctx.settings.vision_model,
        job_id=request.job_id,
    )


def grounding(
    ctx: StageContext, message: str, past: list[dict[str, str]], photo: Classification | None = None
) -> Rule | None:
    """The rule of what the photo shows; else the rule the message names; else the last one this session had."""
    found = rule_for(photo, ctx.rules) if photo is not None else None
    if found is not None:
        return found
    found = ctx.rules.match_text(message)
    if found is not None:
        return found
    earlier = next((turn["rule_id"] for turn in reversed(past) if turn.get("rule_id")), None)
    return ctx.rules.get(earlier) if earlier else None


async def _user_content(ctx: StageContext, request: ChatRequested) -> str | list[dict[str, Any]]:
    if request.image_url is None:
        return request.message
    image = {"type": "image_url", "image_url": {"url": await ctx.readable_image(request.image_url, request.user_id)}}
    return [{"type": "text", "text": request.message}, image]


async def answer(request: ChatRequested, ctx: StageContext) -> ChatAnswer:
    past = await history(ctx, request)
    photo = await seen(ctx, request)
    rule = grounding(ctx, request.message, past, photo)
    system = CHAT_SYSTEM_PROMPT
    if rule is not None:
        system += f"\n{RULE_MARKER} {json.dumps(rule.as_disposal_rules(), ensure_ascii=False)}"
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        *({"role": turn["role"], "content": turn["content"]} for turn in past),
        {"role": "user", "content": await _user_content(ctx, request)},
    ]
    async with DeltaWriter(ctx.store, request.job_id, Stage.CHAT, JobStatus.DONE) as on_text:
        text = await ctx.model.chat(
            model=ctx.settings.answer_model, messages=messages, job_id=request.job_id, on_text=on_text
        )
    return ChatAnswer(text=text, rule_id=rule.id if rule else None, classification=photo)


async def handle(event: CloudEvent, ctx: StageContext) -> CloudEvent | None:
    request = parse_data(event, ChatRequested)
    CALL_PRIORITY.set(event_priority(event).value)

    async def compute() -> ChatAnswer:
        return await answer(request, ctx)

    def change(reply: ChatAnswer) -> Change:
        # chat's one transition is the job's `done`, with its result kept whole in the job hash (GET .../result).
        result: dict[str, object] = {"answer": reply.text, "session_id": request.session_id, "rule_id": reply.rule_id}
        if reply.classification is not None:
            result["classification"] = reply.classification.model_dump(mode="json")
        fields = {"result": json.dumps(result, ensure_ascii=False)}
        return Change(request.user_id, Stage.CHAT, "답변했어요", result, JobStatus.DONE, fields=fields, progress=100)

    # An ended job's events are dropped before any model call; the answer and `done` are written in one step.
    stored = await run_once(
        ctx.store,
        request.job_id,
        Stage.CHAT,
        ChatAnswer,
        compute,
        change,
        timeout_seconds=ctx.settings.work_seconds,
    )
    if stored is not None and stored[1].outcome is TransitionOutcome.APPLIED:
        await remember(ctx, request, stored[0])
    return None


def function() -> EventFunction[StageContext]:
    """The chat function, as functions/chat/main.py serves it."""
    served: EventFunction[StageContext]

    async def setup(settings: Settings) -> StageContext:
        context = await StageContext.create(settings, served.metrics)
        _ = context.model
        return context

    served = ModelFunction("chat", setup, handle, accepts=FUNCTION_EVENTS["chat"][0])
    return served
