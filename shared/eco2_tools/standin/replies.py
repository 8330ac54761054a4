"""What the stand-in says: classification and answer JSON built deterministically from samples and rules."""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from eco2_tools.standin.samples import Sample

UNCLASSIFIED = "미분류"
MARKER = "(stand-in)"
RETAKE_STEPS = (
    "사진을 밝은 곳에서 물건 전체가 보이도록 다시 찍어 주세요.",
    "무엇인지 짧게 적어 주시면 더 정확히 안내해 드릴 수 있어요.",
)
_MAX_ECHO_CHARS = 100


class MatchedRule(Protocol):
    @property
    def major_category(self) -> str: ...
    @property
    def middle_category(self) -> str | None: ...


class TextMatcher(Protocol):
    """The part of eco2.rules.RuleBook the stand-in needs: a keyword match over the user's text."""

    def match_text(self, text: str) -> MatchedRule | None: ...


class MalformedDocument(ValueError):
    """The answer request's user message is not the JSON document the protocol defines."""


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False)


def classification(sample: Sample | None, user_text: str, rules: TextMatcher) -> str:
    """The sample's own labels; for an unknown image the rule the text names; else 미분류."""
    if sample is not None:
        return _dumps(
            {
                "major_category": sample.major_category,
                "middle_category": sample.middle_category,
                "minor_category": sample.minor_category,
                "situation_tags": list(sample.situation_tags),
            }
        )
    rule = rules.match_text(user_text) if user_text.strip() else None
    major, middle = (rule.major_category, rule.middle_category) if rule else (UNCLASSIFIED, None)
    return _dumps({"major_category": major, "middle_category": middle, "minor_category": None, "situation_tags": []})


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Classification(_Loose):
    major_category: str
    middle_category: str | None = None
    minor_category: str | None = None
    situation_tags: list[str] = []


class _Rule(_Loose):
    display_name: str | None = None
    steps: list[str] = []
    insufficient_tags: dict[str, str] = {}


class _AnswerDocument(_Loose):
    classification: _Classification
    disposal_rules: _Rule | None = None
    user_input: str | None = None


def _object_particle(word: str) -> str:
    """로 or 으로 after `word`, by its last syllable (ㄹ takes 로), so the sentence reads naturally."""
    last = word[-1] if word else ""
    if "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28
        return "로" if final in (0, 8) else "으로"
    return "(으)로"


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _echo(user_input: str | None) -> str:
    if not user_input or not user_input.strip():
        return ""
    text = " ".join(user_input.split())
    text = text if len(text) <= _MAX_ECHO_CHARS else text[:_MAX_ECHO_CHARS] + "…"
    return f"“{text}”라고 하셨죠. "


def _user_answer(document: _AnswerDocument, steps: list[str], insufficiencies: list[str]) -> str:
    echo = _echo(document.user_input)
    rule = document.disposal_rules
    if rule is None:
        return f"{MARKER} {echo}사진만으로는 어떤 물건인지, 어떻게 버려야 하는지 확실히 알기 어려워요. " + " ".join(
            _sentence(step) for step in steps
        )
    cls = document.classification
    name = rule.display_name or cls.minor_category or cls.middle_category or cls.major_category
    text = f"{MARKER} {echo}이 물건은 ‘{name}’{_object_particle(name)} 분류했어요."
    if steps:
        text += f" 먼저 {_sentence(steps[0])}"
    if len(steps) > 1:
        text += f" 그다음 {_sentence(steps[1])}"
    if insufficiencies:
        text += " 다만 아직 부족한 점이 있어요: " + " ".join(_sentence(item) for item in insufficiencies)
    else:
        text += " 이대로 배출하시면 돼요!"
    return text


def answer(user_message: str) -> str:
    """disposal_steps from the rule, insufficiencies for the tags the rule names, and a friendly paragraph."""
    try:
        document = _AnswerDocument.model_validate_json(user_message)
    except ValidationError:
        raise MalformedDocument("the user message is not an eco2_answer document") from None
    rule = document.disposal_rules
    steps = list(rule.steps) if rule is not None else list(RETAKE_STEPS)
    insufficiencies: list[str] = []
    if rule is not None:
        # In the order of the tags, each text once: what eco2.rules.Rule.insufficiencies gives too.
        for tag in document.classification.situation_tags:
            text = rule.insufficient_tags.get(tag)
            if text is not None and text not in insufficiencies:
                insufficiencies.append(text)
    return _dumps(
        {
            "disposal_steps": steps,
            "insufficiencies": insufficiencies,
            "user_answer": _user_answer(document, steps, insufficiencies),
        }
    )


def generic(message_count: int) -> str:
    return (
        f"{MARKER} 안녕하세요, 저는 시험용 stand-in 모델 서버예요. 실제 모델이 아니어서 "
        f"eco2_classification과 eco2_answer 요청에만 제대로 답해요. 받은 메시지: {message_count}개."
    )


# Where the chat function's system prompt carries the rule it grounds the answer in (eco2.functions.chat).
RULE_MARKER = "RULE_JSON:"


def _chat_rule(system_text: str) -> _Rule | None:
    _, marker, rest = system_text.partition(RULE_MARKER)
    if not marker:
        return None
    try:
        return _Rule.model_validate_json(rest.strip().splitlines()[0] if rest.strip() else "")
    except (ValidationError, IndexError):
        return None


def chat(system_text: str, user_text: str, turns: int) -> str:
    """A deterministic chat reply, clearly the stand-in's: the grounding rule's first steps, the user echoed."""
    rule = _chat_rule(system_text)
    head = f"{MARKER} 시험용 채팅 답변이에요 ({turns}번째 질문). {_echo(user_text)}"
    if rule is None or not rule.steps:
        return head + "어떤 물건인지 알려 주시면 배출 방법을 안내해 드릴게요."
    name = rule.display_name or "이 물건"
    steps = " ".join(_sentence(step) for step in rule.steps[:2])
    return head + f"‘{name}’{_object_particle(name)} 보고 안내할게요. {steps}"
