"""reward: eco2.scan.answered -> the job's `done` with its result, and its final event: eco2.reward.granted (a
character earned, granted once per user) or eco2.scan.completed."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from eco2 import default_character, keys
from eco2.adapter import EventFunction
from eco2.events import EventType, RewardGranted, ScanAnswered, new_event
from eco2.jobs import Claim, Stage, Transition, TransitionOutcome
from eco2.rewards import RewardDecision, decide_reward, final_event_data, final_result, reward_id
from eco2.stage_context import StageContext
from eco2.stage_work import record_done
from eco2.stages import Progress, Step, rule_of, stage_function

# How long a granted reward id is remembered, so eco2.reward.granted goes out once per reward.
REWARD_CLAIM_SECONDS = 30 * 24 * 3600


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


STEP = RewardStep("reward", ScanAnswered, RewardDecision, decide, rewarded, syncs_catalog=True)


def function() -> EventFunction[StageContext]:
    return stage_function(STEP)
