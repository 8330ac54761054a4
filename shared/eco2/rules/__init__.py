"""Disposal rules and reward characters: the rule files under data/, validated, ordered and looked up.

One JSON file per category (the 12 recyclable middle categories of 재활용폐기물 and the 7 other major
categories), each checked against `rule.schema.json`, so a bad file stops the rules function at start instead of
answering wrongly later: the package's own files by the tests (tests/rules, in CI, before an image is built), any
other directory when the book is loaded from it. `characters.json` is the reward character catalog.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

__all__ = [
    "CHARACTERS_PATH",
    "DATA_DIR",
    "MAJOR_CATEGORIES",
    "RECYCLABLE_MAJOR",
    "RECYCLABLE_MIDDLE_CATEGORIES",
    "SCHEMA_PATH",
    "SITUATION_TAGS",
    "UNCLASSIFIED_MAJOR",
    "Character",
    "CharacterCatalog",
    "NotBelonging",
    "Rule",
    "RuleBook",
    "RuleDataError",
]

_PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = _PACKAGE_DIR / "data"
SCHEMA_PATH = _PACKAGE_DIR / "rule.schema.json"
CHARACTERS_PATH = _PACKAGE_DIR / "characters.json"

MajorCategory = Literal[
    "재활용폐기물",
    "일반종량제폐기물",
    "불연성종량제폐기물",
    "음식물류폐기물",
    "대형폐기물",
    "공사장생활폐기물",
    "생활계유해폐기물",
    "미분류",
]
RecyclableMiddleCategory = Literal[
    "종이",
    "종이팩",
    "무색페트병",
    "플라스틱류",
    "비닐류",
    "발포합성수지",
    "유리병",
    "금속류",
    "의류및원단",
    "전지",
    "조명제품",
    "전기전자제품",
]
SituationTag = Literal[
    "내용물_있음", "이물질_오염", "라벨_부착", "뚜껑_있음", "테이프_부착", "파손", "복합재질", "젖음"
]

# The order of the facts; rules are listed in this order (majors first, then recyclable middles).
MAJOR_CATEGORIES: tuple[str, ...] = get_args(MajorCategory)
RECYCLABLE_MIDDLE_CATEGORIES: tuple[str, ...] = get_args(RecyclableMiddleCategory)
SITUATION_TAGS: tuple[str, ...] = get_args(SituationTag)
RECYCLABLE_MAJOR = "재활용폐기물"
UNCLASSIFIED_MAJOR = "미분류"


class RuleDataError(ValueError):
    """A rule or character file is missing, malformed or inconsistent; the message names the file."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NotBelonging(_Frozen):
    """Something people often put in this category by mistake, and the major category it goes to instead."""

    item: str = Field(min_length=1)
    goes_to: MajorCategory
    reason: str = Field(min_length=1)


class Rule(_Frozen):
    """The disposal rule of one category, as written in its rule file; `id` is the rule id events carry."""

    id: str = Field(pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$", max_length=64)
    major_category: MajorCategory
    middle_category: RecyclableMiddleCategory | None
    display_name: str = Field(min_length=1)
    display_name_en: str = Field(min_length=1)
    recyclable: bool
    character: str | None
    summary: str = Field(min_length=1)
    belongs: tuple[str, ...] = Field(min_length=1)
    not_belongs: tuple[NotBelonging, ...]
    steps: tuple[str, ...] = Field(min_length=1)
    common_mistakes: tuple[str, ...] = Field(min_length=1)
    insufficient_tags: Mapping[SituationTag, str]
    notes: tuple[str, ...] = ()
    keywords: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _recyclable_is_consistent(self) -> Rule:
        # The schema says the same for files; this keeps a Rule built in code just as consistent.
        if self.recyclable != (self.major_category == RECYCLABLE_MAJOR):
            raise ValueError("recyclable must be true exactly when major_category is 재활용폐기물")
        if self.recyclable and (self.middle_category is None or not self.character):
            raise ValueError("a recyclable rule needs a middle_category and a character")
        if not self.recyclable and (self.middle_category is not None or self.character is not None):
            raise ValueError("only recyclable rules have a middle_category or a character")
        return self

    def __hash__(self) -> int:
        # The default frozen-model hash would hash the insufficient_tags dict and fail; ids are unique.
        return hash(self.id)

    def as_disposal_rules(self) -> dict[str, Any]:
        """The JSON-able rule put into a scan's result (`disposal_rules`) and the answer model's input."""
        # Keywords only serve the stand-in's text match; `rule_id` is the name the API uses everywhere.
        return {"rule_id": self.id, **self.model_dump(mode="json", exclude={"id", "keywords"})}

    def insufficiencies(self, tags: Iterable[str]) -> list[str]:
        """What the user still has to do for the situation tags that make this disposal insufficient.

        In the order of `tags`, each text once; tags that do not matter for this rule are ignored.
        """
        texts: list[str] = []
        for tag in tags:
            # Any string may come in (the model's tags); the mapping's keys are typed as the known tags only.
            text = self.insufficient_tags.get(tag)  # type: ignore[call-overload]
            if text is not None and text not in texts:
                texts.append(text)
        return texts


def _category_key(name: str) -> str:
    # A model may answer "무색 페트병" for "무색페트병": compare category names without whitespace.
    return "".join(unicodedata.normalize("NFKC", name).split())


def _text_key(text: str) -> str:
    # Keywords match inside free text regardless of spacing ("치킨 뼈" / "치킨뼈"), case and Unicode form
    # (macOS sends decomposed Hangul).
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _rule_order(rule: Rule) -> tuple[int, int]:
    middle = -1 if rule.middle_category is None else RECYCLABLE_MIDDLE_CATEGORIES.index(rule.middle_category)
    return MAJOR_CATEGORIES.index(rule.major_category), middle


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise RuleDataError(f"{path}: cannot read JSON: {exc}") from None


@cache
def _rule_validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # ~60 ms of imports a function's start does not pay

    schema = _read_json(SCHEMA_PATH)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _check_schema(validator: Draft202012Validator, path: Path, document: Any) -> None:
    # The shallowest error first: it names the field a person has to fix.
    errors = sorted(validator.iter_errors(document), key=lambda e: (len(e.path), e.json_path))
    if errors:
        raise RuleDataError(f"{path}: {errors[0].json_path}: {errors[0].message}")


def _validation_summary(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()[:5]
    )


class RuleBook:
    """All rules, in the facts' order, with lookups by id, by classification and by keyword."""

    def __init__(self, rules: Iterable[Rule], *, directory: Path | None = None) -> None:
        """Index `rules`; `directory` only names the files in error messages.

        A book must be complete (every major category, every recyclable middle category) and unambiguous
        (one rule per category, a keyword in at most one rule), or it raises RuleDataError.
        """
        self._rules = tuple(sorted(rules, key=_rule_order))

        def where(rule: Rule) -> str:
            return str(directory / f"{rule.id}.json") if directory else f"rule {rule.id!r}"

        self._by_id: dict[str, Rule] = {}
        self._by_major: dict[str, Rule] = {}
        self._by_middle: dict[str, Rule] = {}
        for rule in self._rules:
            if rule.id in self._by_id:
                raise RuleDataError(f"{where(rule)}: duplicate rule id {rule.id!r}")
            self._by_id[rule.id] = rule
            index = self._by_major if rule.middle_category is None else self._by_middle
            key: str = rule.major_category if rule.middle_category is None else rule.middle_category
            if key in index:
                raise RuleDataError(
                    f"{where(rule)}: {rule.major_category}/{rule.middle_category} is already covered by "
                    f"{where(index[key])}"
                )
            index[key] = rule

        missing = [m for m in MAJOR_CATEGORIES if m != RECYCLABLE_MAJOR and m not in self._by_major]
        missing += [f"{RECYCLABLE_MAJOR}/{m}" for m in RECYCLABLE_MIDDLE_CATEGORIES if m not in self._by_middle]
        if missing:
            source = str(directory) if directory else "the rule book"
            raise RuleDataError(f"{source}: no rule for {', '.join(missing)}")

        # Longest keyword first, then the rule order: the first keyword found in a text decides.
        owners: dict[str, Rule] = {}
        keywords: list[tuple[str, int, Rule]] = []
        for position, rule in enumerate(self._rules):
            for keyword in rule.keywords:
                key = _text_key(keyword)
                owner = owners.setdefault(key, rule)
                if owner is not rule:
                    raise RuleDataError(f"{where(rule)}: keyword {keyword!r} is also a keyword of {where(owner)}")
                keywords.append((key, position, rule))
        keywords.sort(key=lambda entry: (-len(entry[0]), entry[1]))
        self._keywords = tuple((key, rule) for key, _, rule in keywords)

    @classmethod
    def load(cls, directory: Path | None = None) -> RuleBook:
        """Load and validate every `*.json` rule file in `directory` (default: the package's data)."""
        directory = DATA_DIR if directory is None else directory
        if not directory.is_dir():
            raise RuleDataError(f"{directory}: rule directory does not exist")
        # The package's own files passed the schema in the tests; the models below check them again all the same.
        validator = None if directory == DATA_DIR else _rule_validator()
        rules: list[Rule] = []
        for path in sorted(directory.glob("*.json")):
            document = _read_json(path)
            if validator is not None:
                _check_schema(validator, path, document)
            try:
                rule = Rule.model_validate(document)
            except ValidationError as exc:
                raise RuleDataError(f"{path}: {_validation_summary(exc)}") from None
            if rule.id != path.stem:
                raise RuleDataError(f"{path}: id {rule.id!r} does not match the file name")
            rules.append(rule)
        return cls(rules, directory=directory)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def get(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def match(self, major_category: str, middle_category: str | None) -> Rule | None:
        """The rule for a classification: by middle category for 재활용폐기물, else by the major category.

        None when the major category is unknown, or it is 재활용폐기물 with an unknown or missing middle.
        """
        major = _category_key(major_category)
        if major == RECYCLABLE_MAJOR:
            return None if middle_category is None else self._by_middle.get(_category_key(middle_category))
        return self._by_major.get(major)

    def match_text(self, text: str) -> Rule | None:
        """The rule whose keyword occurs in `text`; the longest keyword wins, ties go to the earlier rule."""
        key = _text_key(text)
        if not key:
            return None
        return next((rule for keyword, rule in self._keywords if keyword in key), None)

    def categories(self) -> list[dict[str, Any]]:
        """The supported categories with their names and instructions (GET /api/v1/scan/categories)."""
        return [
            {
                "rule_id": rule.id,
                "major_category": rule.major_category,
                "middle_category": rule.middle_category,
                "display_name": rule.display_name,
                "display_name_en": rule.display_name_en,
                "recyclable": rule.recyclable,
                "summary": rule.summary,
                "steps": list(rule.steps),
            }
            for rule in self._rules
        ]

    def middle_categories(self) -> tuple[str, ...]:
        """The recyclable middle categories, in the facts' order."""
        return tuple(rule.middle_category for rule in self._rules if rule.middle_category is not None)


class Character(_Frozen):
    """A collectible reward character; every one but the default belongs to a recyclable middle category."""

    character_id: str = Field(pattern=r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$", max_length=64)
    name: str = Field(min_length=1, max_length=64)
    middle_category: RecyclableMiddleCategory | None
    is_default: bool
    description: str = Field(min_length=1)

    @model_validator(mode="after")
    def _default_has_no_category(self) -> Character:
        if self.is_default != (self.middle_category is None):
            raise ValueError("exactly the default character has no middle_category")
        return self


class CharacterCatalog:
    """The reward characters: one default, at most one per recyclable middle category."""

    def __init__(self, characters: Iterable[Character]) -> None:
        self._characters = tuple(characters)
        self._by_id: dict[str, Character] = {}
        self._by_middle: dict[str, Character] = {}
        defaults = [c for c in self._characters if c.is_default]
        if len(defaults) != 1:
            raise RuleDataError(f"the catalog needs exactly one default character, found {len(defaults)}")
        self._default = defaults[0]
        for character in self._characters:
            if character.character_id in self._by_id:
                raise RuleDataError(f"duplicate character_id {character.character_id!r}")
            self._by_id[character.character_id] = character
            if character.middle_category is not None:
                if character.middle_category in self._by_middle:
                    raise RuleDataError(f"two characters for middle category {character.middle_category}")
                self._by_middle[character.middle_category] = character

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> CharacterCatalog:
        """Build a catalog from plain records (the catalog file, or a copy cached in Redis)."""
        characters: list[Character] = []
        for position, record in enumerate(records):
            try:
                characters.append(Character.model_validate(record))
            except ValidationError as exc:
                raise RuleDataError(f"character [{position}]: {_validation_summary(exc)}") from None
        return cls(characters)

    @classmethod
    def load(cls, path: Path | None = None) -> CharacterCatalog:
        """Load the catalog file (default: the package's characters.json), a JSON list of records."""
        path = CHARACTERS_PATH if path is None else path
        document = _read_json(path)
        if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
            raise RuleDataError(f"{path}: the catalog must be a JSON list of objects")
        try:
            return cls.from_records(document)
        except RuleDataError as exc:
            raise RuleDataError(f"{path}: {exc}") from None

    def as_records(self) -> list[dict[str, Any]]:
        """The catalog as plain records, the inverse of from_records (for caching it elsewhere)."""
        return [character.model_dump(mode="json") for character in self._characters]

    def all(self) -> tuple[Character, ...]:
        return self._characters

    def default(self) -> Character:
        return self._default

    def get(self, character_id: str) -> Character | None:
        return self._by_id.get(character_id)

    def for_middle_category(self, middle: str) -> Character | None:
        return self._by_middle.get(_category_key(middle))
