"""The reward decision, the finished scan's result and its final event: what the reward step computes.

Pure functions of the answered scan, its rule and the character catalog; `eco2.stages` runs them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from eco2.events import GrantedCharacter, RewardGranted, ScanAnswered, ScanCompleted
from eco2.rules import RECYCLABLE_MAJOR, CharacterCatalog, Rule

# Namespace for reward ids: one reward per (user, character), whatever job earned it.
_REWARD_NAMESPACE = uuid.UUID("0b7d3c52-8f7e-4a36-9d0e-2f1e6c5a9b10")


class RewardDecision(BaseModel):
    character: GrantedCharacter | None
    reason: str  # machine-readable: granted, default, not_recyclable, no_rule, insufficient, no_character
    message: str


def decide_reward(scan: ScanAnswered, rule: Rule | None, catalog: CharacterCatalog) -> RewardDecision:
    """Only a recyclable item, with a rule found and nothing insufficient, earns its category's character."""

    def none(reason: str, message: str) -> RewardDecision:
        return RewardDecision(character=None, reason=reason, message=message)

    if scan.classification.major_category != RECYCLABLE_MAJOR:
        return none("not_recyclable", "재활용 대상이 아니어서 캐릭터는 지급되지 않았어요")
    if rule is None:
        return none("no_rule", "배출 규칙을 찾지 못해 캐릭터는 지급되지 않았어요")
    if scan.final_answer.insufficiencies or rule.insufficiencies(scan.classification.situation_tags):
        return none("insufficient", "배출 준비가 부족해서 이번에는 캐릭터가 지급되지 않았어요")
    middle = scan.classification.middle_category or ""
    character = catalog.for_middle_category(middle)
    if character is None:
        return none("no_character", "이 품목에는 아직 캐릭터가 없어요")
    granted = GrantedCharacter(character_id=character.character_id, name=character.name, middle_category=middle)
    return RewardDecision(
        character=granted, reason="granted", message=f"잘 분리배출했어요! {character.name} 캐릭터를 얻었어요"
    )


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


def scan_summary(scan: ScanAnswered, reason: str) -> dict[str, Any]:
    """The history fields both final events carry."""
    return {
        "job_id": scan.job_id,
        "user_id": scan.user_id,
        "category": scan.classification.major_category,
        "middle_category": scan.classification.middle_category,
        "rule_id": scan.rule_id,
        "reward_reason": reason,
        "completed_at": datetime.now(UTC),
    }


def final_event_data(scan: ScanAnswered, decision: RewardDecision, claimed: bool) -> RewardGranted | ScanCompleted:
    """reward.granted when this delivery claimed the reward id, else scan.completed (already owned, or none)."""
    character = decision.character
    if character is None:
        return ScanCompleted(**scan_summary(scan, decision.reason))
    if not claimed:
        return ScanCompleted(**scan_summary(scan, "already_owned"), character=character)
    rid = reward_id(scan.user_id, character.character_id)
    return RewardGranted(**scan_summary(scan, decision.reason), reward_id=rid, character=character)
