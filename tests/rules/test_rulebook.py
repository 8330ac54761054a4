"""The rule files and the character catalog: complete, schema-valid, consistent, and looked up correctly."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from eco2.rules import (
    CHARACTERS_PATH,
    DATA_DIR,
    MAJOR_CATEGORIES,
    RECYCLABLE_MAJOR,
    RECYCLABLE_MIDDLE_CATEGORIES,
    SCHEMA_PATH,
    SITUATION_TAGS,
    UNCLASSIFIED_MAJOR,
    CharacterCatalog,
    Rule,
    RuleBook,
    RuleDataError,
)

# Written out again from the facts, so a change to the module's constants has to be a deliberate one.
FACTS_MAJORS = (
    "재활용폐기물",
    "일반종량제폐기물",
    "불연성종량제폐기물",
    "음식물류폐기물",
    "대형폐기물",
    "공사장생활폐기물",
    "생활계유해폐기물",
    "미분류",
)
FACTS_MIDDLES = (
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
)
FACTS_TAGS = (
    "내용물_있음",
    "이물질_오염",
    "라벨_부착",
    "뚜껑_있음",
    "테이프_부착",
    "파손",
    "복합재질",
    "젖음",
)
FACTS_CHARACTERS = {
    "페티": "무색페트병",
    "플리": "플라스틱류",
    "비니": "비닐류",
    "폼이": "발포합성수지",
    "페이피": "종이",
    "팩토리": "종이팩",
    "글래시": "유리병",
    "메탈리": "금속류",
    "코튼": "의류및원단",
    "배리": "전지",
    "라이티": "조명제품",
    "일렉": "전기전자제품",
}
RULE_IDS = {
    "recyclable_paper",
    "recyclable_carton",
    "recyclable_clear_pet",
    "recyclable_plastic",
    "recyclable_film",
    "recyclable_eps",
    "recyclable_glass_bottle",
    "recyclable_metal",
    "recyclable_textile",
    "recyclable_battery",
    "recyclable_lighting",
    "recyclable_electronics",
    "general_waste",
    "non_combustible_waste",
    "food_waste",
    "bulky_waste",
    "construction_waste",
    "hazardous_waste",
    "unclassified",
}


@pytest.fixture(scope="module")
def book() -> RuleBook:
    return RuleBook.load()


@pytest.fixture(scope="module")
def catalog() -> CharacterCatalog:
    return CharacterCatalog.load()


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def rule_document(rule_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA_DIR / f"{rule_id}.json").read_text(encoding="utf-8"))
    return document


def rule_of(book: RuleBook, rule_id: str) -> Rule:
    rule = book.get(rule_id)
    assert rule is not None, rule_id
    return rule


# --- the files -------------------------------------------------------------------------------------------


def test_all_nineteen_rule_files_exist_and_validate_against_the_schema(
    validator: Draft202012Validator,
) -> None:
    paths = sorted(DATA_DIR.glob("*.json"))
    assert {p.stem for p in paths} == RULE_IDS
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        errors = [e.message for e in validator.iter_errors(document)]
        assert errors == [], path.name
        assert document["id"] == path.stem


def test_the_packaged_rules_load_without_jsonschema() -> None:
    # The test above is the packaged files' schema check: a function's start does not import jsonschema for it.
    script = "import sys\nfrom eco2.rules import RuleBook\nRuleBook.load()\nprint('jsonschema' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False"]


def test_the_schema_and_the_module_use_the_facts_vocabulary() -> None:
    defs: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))["$defs"]
    assert MAJOR_CATEGORIES == FACTS_MAJORS == tuple(defs["major_category"]["enum"])
    assert RECYCLABLE_MIDDLE_CATEGORIES == FACTS_MIDDLES == tuple(defs["recyclable_middle_category"]["enum"])
    assert SITUATION_TAGS == FACTS_TAGS == tuple(defs["situation_tag"]["enum"])
    assert FACTS_MAJORS[0] == RECYCLABLE_MAJOR
    assert FACTS_MAJORS[-1] == UNCLASSIFIED_MAJOR


def _mutated(change: str) -> dict[str, Any]:
    document = copy.deepcopy(rule_document("recyclable_clear_pet"))
    if change == "not_recyclable":
        document["recyclable"] = False
    elif change == "no_middle":
        document["middle_category"] = None
    elif change == "unknown_middle":
        document["middle_category"] = "페트"
    elif change == "no_character":
        document["character"] = None
    elif change == "unknown_tag":
        document["insufficient_tags"]["스티커"] = "떼어 주세요"
    elif change == "bad_goes_to":
        document["not_belongs"][0]["goes_to"] = "플라스틱류"
    elif change == "empty_steps":
        document["steps"] = []
    elif change == "extra_field":
        document["colour"] = "투명"
    elif change == "missing_keywords":
        del document["keywords"]
    elif change == "bad_id":
        document["id"] = "Clear-PET"
    elif change == "blank_belongs":
        document["belongs"] = ["  "]
    return document


@pytest.mark.parametrize(
    "change",
    [
        "not_recyclable",
        "no_middle",
        "unknown_middle",
        "no_character",
        "unknown_tag",
        "bad_goes_to",
        "empty_steps",
        "extra_field",
        "missing_keywords",
        "bad_id",
        "blank_belongs",
    ],
)
def test_the_schema_rejects_an_inconsistent_rule(validator: Draft202012Validator, change: str) -> None:
    assert validator.is_valid(rule_document("recyclable_clear_pet"))
    assert not validator.is_valid(_mutated(change))


def test_the_schema_ties_non_recyclable_majors_to_no_middle_and_no_character(
    validator: Draft202012Validator,
) -> None:
    document = rule_document("general_waste")
    assert validator.is_valid(document)
    for field, value in (("recyclable", True), ("middle_category", "종이"), ("character", "이코")):
        assert not validator.is_valid({**document, field: value}), field


# --- the book's coverage ---------------------------------------------------------------------------------


def test_the_book_has_the_twelve_recyclable_middles_and_the_seven_other_majors(book: RuleBook) -> None:
    assert len(book.rules) == 19
    assert {r.id for r in book.rules} == RULE_IDS
    recyclable = [r for r in book.rules if r.recyclable]
    others = [r for r in book.rules if not r.recyclable]
    assert [r.middle_category for r in recyclable] == list(FACTS_MIDDLES)
    assert all(r.major_category == RECYCLABLE_MAJOR for r in recyclable)
    assert [r.major_category for r in others] == list(FACTS_MAJORS[1:])
    assert all(r.middle_category is None and r.character is None for r in others)
    assert book.middle_categories() == FACTS_MIDDLES


def test_every_rule_says_what_belongs_how_and_what_goes_wrong(book: RuleBook) -> None:
    for rule in book.rules:
        assert all((rule.belongs, rule.steps, rule.common_mistakes, rule.keywords)), rule.id
        assert all((rule.summary.strip(), rule.display_name.strip(), rule.display_name_en.isascii())), rule.id
        if rule.recyclable:
            assert rule.character


def test_not_belonging_items_go_to_a_valid_other_category(book: RuleBook) -> None:
    destinations = set()
    for rule in book.rules:
        for entry in rule.not_belongs:
            assert entry.goes_to in MAJOR_CATEGORIES, (rule.id, entry.item)
            if not rule.recyclable:
                assert entry.goes_to != rule.major_category, (rule.id, entry.item)
            destinations.add(entry.goes_to)
    assert {"일반종량제폐기물", "불연성종량제폐기물", "대형폐기물", "생활계유해폐기물"} <= destinations
    # Facts: what an animal cannot eat is not food waste.
    food = rule_of(book, "food_waste")
    assert any("뼈" in e.item and e.goes_to == "일반종량제폐기물" for e in food.not_belongs)
    glass = rule_of(book, "recyclable_glass_bottle")
    assert any("깨진 유리" in e.item and e.goes_to == "불연성종량제폐기물" for e in glass.not_belongs)


def test_the_facts_numbers_and_dates_are_kept(book: RuleBook) -> None:
    electronics = rule_of(book, "recyclable_electronics")
    assert any("1599-0903" in text for text in (*electronics.steps, *electronics.notes))
    pet_notes = " ".join(rule_of(book, "recyclable_clear_pet").notes)
    assert "2020년 12월 25일" in pet_notes
    assert "2021년 12월 25일" in pet_notes


def test_insufficient_tags_are_the_ones_that_matter_for_each_rule(book: RuleBook) -> None:
    pet = rule_of(book, "recyclable_clear_pet")
    # The cap goes back on a crushed clear PET bottle, so a cap is fine there; a label is not.
    assert {"라벨_부착", "내용물_있음"} <= set(pet.insufficient_tags)
    assert "뚜껑_있음" not in pet.insufficient_tags
    assert "파손" in rule_of(book, "recyclable_lighting").insufficient_tags
    glass = rule_of(book, "recyclable_glass_bottle")
    assert {"뚜껑_있음", "파손"} <= set(glass.insufficient_tags)
    assert "테이프_부착" in rule_of(book, "recyclable_paper").insufficient_tags
    assert "뚜껑_있음" in rule_of(book, "recyclable_plastic").insufficient_tags
    for rule in book.rules:
        assert set(rule.insufficient_tags) <= set(SITUATION_TAGS), rule.id


# --- characters ------------------------------------------------------------------------------------------


def test_the_catalog_has_the_default_and_one_character_per_recyclable_middle(
    catalog: CharacterCatalog,
) -> None:
    characters = catalog.all()
    assert len(characters) == 13
    default = catalog.default()
    assert (default.name, default.middle_category, default.is_default) == ("이코", None, True)
    others = {c.name: c.middle_category for c in characters if not c.is_default}
    assert others == FACTS_CHARACTERS
    ids = [c.character_id for c in characters]
    assert len(set(ids)) == len(ids)
    assert all(i.isascii() and i.startswith("char_") for i in ids)
    assert all(c.description.strip() for c in characters)


def test_every_recyclable_rule_has_its_character_and_every_character_a_rule(
    book: RuleBook, catalog: CharacterCatalog
) -> None:
    for rule in book.rules:
        if rule.recyclable:
            assert rule.middle_category is not None
            character = catalog.for_middle_category(rule.middle_category)
            assert character is not None, rule.id
            assert character.name == rule.character, rule.id
    for character in catalog.all():
        if not character.is_default:
            assert character.middle_category is not None
            matched = book.match(RECYCLABLE_MAJOR, character.middle_category)
            assert matched is not None
            assert matched.character == character.name
    assert catalog.for_middle_category("없는분류") is None


def test_the_catalog_round_trips_through_plain_records(catalog: CharacterCatalog) -> None:
    records = json.loads(json.dumps(catalog.as_records(), ensure_ascii=False))
    rebuilt = CharacterCatalog.from_records(records)
    assert rebuilt.all() == catalog.all()
    assert rebuilt.default() == catalog.default()
    assert rebuilt.get("char_peti") == catalog.for_middle_category("무색페트병")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("two_defaults", "exactly one default"),
        ("no_default", "exactly one default"),
        ("duplicate_middle", "two characters for middle category"),
        ("duplicate_id", "duplicate character_id"),
        ("unknown_middle", "middle_category"),
    ],
)
def test_an_inconsistent_catalog_is_refused(change: str, expected: str) -> None:
    records = json.loads(CHARACTERS_PATH.read_text(encoding="utf-8"))
    if change == "two_defaults":
        records[1] = {**records[1], "is_default": True, "middle_category": None}
    elif change == "no_default":
        records = records[1:]
    elif change == "duplicate_middle":
        records[2] = {**records[2], "middle_category": records[1]["middle_category"]}
    elif change == "duplicate_id":
        records[2] = {**records[2], "character_id": records[1]["character_id"]}
    elif change == "unknown_middle":
        records[1] = {**records[1], "middle_category": "페트"}
    with pytest.raises(RuleDataError, match=expected):
        CharacterCatalog.from_records(records)


def test_a_broken_catalog_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "characters.json"
    path.write_text('{"character_id": "char_eco"}', encoding="utf-8")
    with pytest.raises(RuleDataError, match=r"characters\.json"):
        CharacterCatalog.load(path)


# --- lookups ---------------------------------------------------------------------------------------------


def test_match_finds_recyclables_by_middle_and_others_by_major(book: RuleBook) -> None:
    def matched(major: str, middle: str | None) -> str | None:
        rule = book.match(major, middle)
        return rule.id if rule else None

    assert matched("재활용폐기물", "무색페트병") == "recyclable_clear_pet"
    assert matched("재활용폐기물", "조명제품") == "recyclable_lighting"
    assert matched("재활용폐기물", "무색 페트병") == "recyclable_clear_pet"  # spacing from a model
    assert matched("재활용폐기물", None) is None
    assert matched("재활용폐기물", "페트") is None
    assert matched("재활용폐기물", "일반종량제폐기물") is None
    assert matched("일반종량제폐기물", None) == "general_waste"
    assert matched("음식물류폐기물", "무색페트병") == "food_waste"  # the middle is ignored outside 재활용
    assert matched("생활계유해폐기물", None) == "hazardous_waste"
    assert matched("미분류", None) == "unclassified"
    assert matched("쓰레기", None) is None
    assert matched("", None) is None
    for rule in book.rules:
        assert book.match(rule.major_category, rule.middle_category) is rule
    assert book.get("recyclable_clear_pet") is book.match("재활용폐기물", "무색페트병")
    assert book.get("no_such_rule") is None


def test_insufficiencies_follow_the_tags_order_once_each_and_skip_what_does_not_matter(
    book: RuleBook,
) -> None:
    pet = rule_of(book, "recyclable_clear_pet")
    label, dirty, contents = (pet.insufficient_tags[t] for t in ("라벨_부착", "이물질_오염", "내용물_있음"))
    assert pet.insufficiencies(["뚜껑_있음", "이물질_오염", "라벨_부착", "이물질_오염", "모르는_태그"]) == [
        dirty,
        label,
    ]
    assert pet.insufficiencies(("라벨_부착", "내용물_있음", "이물질_오염")) == [label, contents, dirty]
    assert pet.insufficiencies(iter(["뚜껑_있음", "테이프_부착"])) == []
    assert pet.insufficiencies([]) == []
    lamp = rule_of(book, "recyclable_lighting")
    assert lamp.insufficiencies(["라벨_부착", "파손"]) == [lamp.insufficient_tags["파손"]]
    assert rule_of(book, "recyclable_battery").insufficiencies(FACTS_TAGS) == list(
        rule_of(book, "recyclable_battery").insufficient_tags.values()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("생수병 버리려고요", "recyclable_clear_pet"),
        ("치킨 뼈", "general_waste"),  # bones are not food waste
        ("남은 치킨", "food_waste"),
        ("깨진 유리", "non_combustible_waste"),
        ("깨진 유리병이에요", "non_combustible_waste"),
        ("유리병", "recyclable_glass_bottle"),
        ("형광등", "recyclable_lighting"),
        ("약", "hazardous_waste"),
        ("유통기한 지난 감기약", "hazardous_waste"),
        ("우유팩 어떻게 버려요?", "recyclable_carton"),
        ("종이컵", "recyclable_carton"),
        ("택배 상자", "recyclable_paper"),
        ("스티로폼 박스", "recyclable_eps"),
        ("유색 페트병", "recyclable_plastic"),
        ("계란 껍질", "general_waste"),
        ("영수증", "general_waste"),
        ("휴대폰 배터리", "recyclable_battery"),
        ("냉장고 버리기", "recyclable_electronics"),
        ("매트리스", "bulky_waste"),
        ("책상", "bulky_waste"),
        ("페인트 캔", "hazardous_waste"),
        ("음료 캔", "recyclable_metal"),
        ("Water Bottle", "recyclable_clear_pet"),
    ],
)
def test_match_text_prefers_the_longest_keyword(book: RuleBook, text: str, expected: str) -> None:
    rule = book.match_text(text)
    assert rule is not None, text
    assert rule.id == expected


def test_match_text_finds_nothing_in_unrelated_or_empty_text(book: RuleBook) -> None:
    assert book.match_text("") is None
    assert book.match_text("   ") is None
    assert book.match_text("안녕하세요 이거 뭐예요?") is None


def test_match_text_ignores_spacing_and_unicode_form(book: RuleBook) -> None:
    decomposed = unicodedata.normalize("NFD", "생수 병")
    rule = book.match_text(decomposed)
    assert rule is not None
    assert rule.id == "recyclable_clear_pet"


def test_no_keyword_belongs_to_two_rules(book: RuleBook) -> None:
    seen: dict[str, str] = {}
    for rule in book.rules:
        for keyword in rule.keywords:
            key = "".join(keyword.casefold().split())
            assert seen.setdefault(key, rule.id) == rule.id, keyword


def test_disposal_rules_are_json_and_leave_out_the_keywords(book: RuleBook) -> None:
    rule = rule_of(book, "recyclable_clear_pet")
    data = rule.as_disposal_rules()
    assert json.loads(json.dumps(data, ensure_ascii=False)) == data
    assert data["rule_id"] == "recyclable_clear_pet"
    assert data["middle_category"] == "무색페트병"
    assert data["steps"] == list(rule.steps)
    assert data["insufficient_tags"]["라벨_부착"] == rule.insufficient_tags["라벨_부착"]
    assert data["not_belongs"][0].keys() == {"item", "goes_to", "reason"}
    assert "keywords" not in data
    assert "id" not in data
    data["steps"].append("changed")
    assert rule.as_disposal_rules()["steps"] == list(rule.steps)


def test_categories_list_every_rule_with_names_and_steps(book: RuleBook) -> None:
    categories = book.categories()
    assert json.loads(json.dumps(categories, ensure_ascii=False)) == categories
    assert [c["rule_id"] for c in categories] == [r.id for r in book.rules]
    expected_keys = {
        "rule_id",
        "major_category",
        "middle_category",
        "display_name",
        "display_name_en",
        "recyclable",
        "summary",
        "steps",
    }
    assert all(c.keys() == expected_keys for c in categories)
    assert sum(c["recyclable"] for c in categories) == 12
    pet = next(c for c in categories if c["rule_id"] == "recyclable_clear_pet")
    assert (pet["display_name"], pet["display_name_en"]) == ("무색 페트병", "Clear PET bottles")


def test_a_rule_built_in_code_must_be_consistent() -> None:
    document = rule_document("general_waste")
    with pytest.raises(ValidationError, match="recyclable"):
        Rule.model_validate({**document, "recyclable": True})
    with pytest.raises(ValidationError):
        Rule.model_validate({**document, "insufficient_tags": {"스티커": "떼어 주세요"}})
    rule = Rule.model_validate(document)
    with pytest.raises(ValidationError):
        rule.summary = "changed"  # type: ignore[misc]


# --- loading broken data ---------------------------------------------------------------------------------


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "rules"
    shutil.copytree(DATA_DIR, directory)
    return directory


def rewrite(path: Path, change: dict[str, Any]) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    document.update(change)
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")


def test_a_copy_of_the_data_loads_the_same(data_copy: Path, book: RuleBook) -> None:
    assert RuleBook.load(data_copy).rules == book.rules


def test_a_file_that_is_not_json_is_named(data_copy: Path) -> None:
    (data_copy / "recyclable_film.json").write_text('{"id": "recyclable_film",', encoding="utf-8")
    with pytest.raises(RuleDataError, match=r"recyclable_film\.json.*JSON"):
        RuleBook.load(data_copy)


def test_a_duplicate_key_is_refused(data_copy: Path) -> None:
    path = data_copy / "food_waste.json"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('"id": "food_waste",', '"id": "food_waste", "id": "food_waste",'), encoding="utf-8")
    with pytest.raises(RuleDataError, match=r"food_waste\.json.*duplicate key 'id'"):
        RuleBook.load(data_copy)


def test_a_schema_violation_names_the_file_and_the_field(data_copy: Path) -> None:
    path = data_copy / "recyclable_metal.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    document["not_belongs"][0]["goes_to"] = "하수구"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(RuleDataError, match=r"recyclable_metal\.json: \$\.not_belongs\[0\]\.goes_to"):
        RuleBook.load(data_copy)


def test_an_id_that_differs_from_the_file_name_is_refused(data_copy: Path) -> None:
    rewrite(data_copy / "bulky_waste.json", {"id": "large_waste"})
    with pytest.raises(RuleDataError, match=r"bulky_waste\.json: id 'large_waste'"):
        RuleBook.load(data_copy)


def test_two_files_for_one_category_are_refused(data_copy: Path) -> None:
    shutil.copy(data_copy / "recyclable_clear_pet.json", data_copy / "clear_pet_again.json")
    rewrite(data_copy / "clear_pet_again.json", {"id": "clear_pet_again", "keywords": ["다른 키워드"]})
    with pytest.raises(RuleDataError, match="재활용폐기물/무색페트병 is already covered") as raised:
        RuleBook.load(data_copy)
    assert "clear_pet_again.json" in str(raised.value)
    assert "recyclable_clear_pet.json" in str(raised.value)


def test_a_missing_category_is_refused(data_copy: Path) -> None:
    (data_copy / "recyclable_battery.json").unlink()
    with pytest.raises(RuleDataError, match="재활용폐기물/전지"):
        RuleBook.load(data_copy)


def test_a_keyword_in_two_rules_is_refused(data_copy: Path) -> None:
    document = rule_document("general_waste")
    rewrite(data_copy / "general_waste.json", {"keywords": [*document["keywords"], "생수 병"]})
    with pytest.raises(RuleDataError, match=r"general_waste\.json: keyword '생수 병'.*recyclable_clear_pet\.json"):
        RuleBook.load(data_copy)


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleDataError, match="does not exist"):
        RuleBook.load(tmp_path / "nowhere")
