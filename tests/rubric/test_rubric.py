"""Rubric files load, the seed rubric has the seed's structure, and every validation error names its place."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.errors import RubricError
from pipeline.paths import SEEDS_DIR
from pipeline.rubric.load import load_rubric, rubric_json_schema
from pipeline.rubric.model import Rubric

REPO = Path(__file__).resolve().parents[2]
RUBRIC_DIR = REPO / "rubric"
SEED_RUBRIC = RUBRIC_DIR / "ecommerce_cs.yaml"
SEED_TEXT = SEEDS_DIR / "000_63ce76fe06ed44e9.txt"
SCHEMA_COMMENT = "# yaml-language-server: $schema=rubric.schema.json"


def _rubric_files() -> list[Path]:
    """Every YAML in rubric/ that is a rubric (has top-level `dimensions`); lexicons and such are skipped."""
    files = []
    for path in sorted(RUBRIC_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "dimensions" in data:
            files.append(path)
    return files


RUBRIC_FILES = _rubric_files()


def test_the_known_rubrics_are_found() -> None:
    assert {p.name for p in RUBRIC_FILES} >= {"ecommerce_cs.yaml", "dch1_quality.yaml"}


@pytest.mark.parametrize("path", RUBRIC_FILES, ids=lambda p: p.name)
def test_rubric_file_loads_and_points_to_the_schema(path: Path) -> None:
    rubric = load_rubric(path)
    assert rubric.id == path.stem
    assert path.read_text(encoding="utf-8").splitlines()[0] == SCHEMA_COMMENT


# (dimension id, name, points, [(group id, name, points, [(criterion id, name, level points)])]),
# transcribed from the seed's headings; the last level's points are the criterion's maximum.
SEED_STRUCTURE: list[tuple[str, str, int, list[tuple[str, str, int, list[tuple[str, str, list[int]]]]]]] = [
    ("affinity", "服务亲和力", 21, [
        ("service_language", "服务用语", 9, [
            ("greeting", "招呼语", [0, 1, 3]),
            ("text_accuracy", "文字回复准确", [0, 1, 2, 3]),
            ("closing", "结束语", [0, 1, 2, 3]),
        ]),
        ("service_attitude", "服务态度", 12, [
            ("courtesy_patience", "亲切、耐心态度", [0, 1, 2, 3, 4]),
            ("interactivity", "互动性", [0, 2, 3, 4]),
            ("proactivity", "主动性", [0, 1, 2, 3, 4]),
        ]),
    ]),
    ("marketing", "营销能力", 35, [
        ("business", "业务能力", 15, [
            ("understand_needs", "正确理解需求", [0, 1, 3, 5]),
            ("answer_accuracy", "答复准确、完整", [0, 2, 5]),
            ("ask_one_answer_three", "问一答三", [0, 2, 3, 5]),
        ]),
        ("proactive_marketing", "主动营销", 20, [
            ("preprocessing", "预处理完整", [0, 2, 5, 8, 10]),
            ("retention_recommendation", "营销、挽留灵活推荐", [0, 3, 6, 10]),
        ]),
    ]),
    ("online_handling", "在线处理能力", 20, [
        ("service_process", "服务流程", 20, [
            ("process_standard", "准确、熟练,服务流程规范,告知购物须知", [0, 2, 5, 8, 10]),
            ("tmall_rules", "熟悉天猫规则及操作", [0, 3, 6, 10]),
        ]),
    ]),
]

# Points the seed prints under a level description (criterion id -> {points: seed line}); the rest are
# the rubric author's choice and must say so in a note.
SEED_STATED_POINTS = {
    "greeting": {0, 1, 3},
    "text_accuracy": {2},
    "courtesy_patience": {4},
    "understand_needs": {5},
    "preprocessing": {8, 10},
    "retention_recommendation": {6},
}


def _structure(rubric: Rubric) -> list[Any]:
    return [
        (d.id, d.name, d.points, [
            (g.id, g.name, g.points, [(c.id, c.name, c.points) for c in g.criteria]) for g in d.groups
        ])
        for d in rubric.dimensions
    ]


def test_seed_rubric_has_the_seed_structure() -> None:
    rubric = load_rubric(SEED_RUBRIC)
    assert (rubric.id, rubric.version, rubric.name, rubric.language, rubric.total) == (
        "ecommerce_cs", "1", "电商客服评分", "zh", 76
    )
    assert rubric.source and rubric.note
    assert _structure(rubric) == SEED_STRUCTURE
    for c in rubric.criteria():
        assert c.max == c.points[-1]


def test_seed_rubric_explains_every_point_value_it_chose() -> None:
    rubric = load_rubric(SEED_RUBRIC)
    for c in rubric.criteria():
        for level in c.levels:
            stated = level.points in SEED_STATED_POINTS.get(c.id, set())
            assert stated or level.note or c.note, f"{c.id} level {level.points} needs a note"


def _seed_lines() -> list[str]:
    text = SEED_TEXT.read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines()]
    return lines[lines.index("电商客服评分", 1) + 1:]  # line 1 is the page title; the rubric starts later


@pytest.mark.skipif(not SEED_TEXT.is_file(), reason="the shared seeds are not next to the repository")
def test_seed_rubric_wording_is_the_seeds_and_complete() -> None:
    """Every level description is seed lines joined by "；", and every seed description line is used."""
    rubric = load_rubric(SEED_RUBRIC)
    lines = _seed_lines()
    headings = {line for line in lines if "—" in line}
    descriptions = {line for line in lines if line and "—" not in line and not line.isdigit()}
    used = set()
    for d in rubric.dimensions:
        assert f"{d.name}—{d.points}分" in headings
        for g in d.groups:
            assert f"{g.name}—{g.points}" in headings
    for c in rubric.criteria():
        assert f"{c.name}—{c.max}" in headings
        for level in c.levels:
            parts = level.description.split("；")
            assert set(parts) <= descriptions, (c.id, parts)
            used.update(parts)
    assert used == descriptions


def test_dch1_rubric_shifts_the_original_scale_by_two() -> None:
    rubric = load_rubric(RUBRIC_DIR / "dch1_quality.yaml")
    assert rubric.total == 12
    assert [c.id for c in rubric.criteria()] == ["accomplishment", "satisfaction", "efficiency"]
    assert len(rubric.dimensions) == 1 and len(rubric.dimensions[0].groups) == 1
    for c in rubric.criteria():
        assert c.points == [0, 1, 2, 3, 4]
        assert "points = original + 2" in (c.note or "")
        for level in c.levels:
            original = level.points - 2
            shown = f"−{-original}" if original < 0 else str(original)  # the notes use U+2212 minus
            assert (level.note or "").endswith(f"= {shown}."), (c.id, level.note)


def test_committed_schema_is_the_generated_one() -> None:
    expected = json.dumps(rubric_json_schema(), ensure_ascii=False, indent=2) + "\n"
    assert (RUBRIC_DIR / "rubric.schema.json").read_text(encoding="utf-8") == expected


# ---- validation errors, each built from the real seed rubric --------------------------------------------


def _seed_data() -> dict[str, Any]:
    data = yaml.safe_load(SEED_RUBRIC.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _criterion(data: dict[str, Any], criterion_id: str) -> dict[str, Any]:
    for d in data["dimensions"]:
        for g in d["groups"]:
            for c in g["criteria"]:
                if c["id"] == criterion_id:
                    return c  # type: ignore[no-any-return]  # parsed YAML is untyped
    raise KeyError(criterion_id)


def _broken(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> RubricError:
    data = _seed_data()
    mutate(data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def _set_max(criterion_id: str, new_max: int) -> Callable[[dict[str, Any]], None]:
    """Raise a criterion's maximum and its top level together, so only the subtotal is wrong."""

    def mutate(data: dict[str, Any]) -> None:
        c = _criterion(data, criterion_id)
        c["max"] = new_max
        max(c["levels"], key=lambda level: level["points"])["points"] = new_max

    return mutate


def test_group_subtotal_mismatch_names_group_and_criteria(tmp_path: Path) -> None:
    err = _broken(tmp_path, _set_max("text_accuracy", 4))
    assert err.problems == [
        "group service_language (服务用语) is 9 points but its criteria add up to 10: "
        "greeting 3 + text_accuracy 4 + closing 3"
    ]


def test_dimension_and_total_mismatch_name_their_parts(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["dimensions"][2]["points"] = 21
        data["total"] = 70

    err = _broken(tmp_path, mutate)
    assert err.problems == [
        "dimension online_handling (在线处理能力) is 21 points but its groups add up to 20: "
        "service_process 20",
        "rubric total is 70 but its dimensions add up to 77: affinity 21 + marketing 35 + online_handling 21",
    ]


@pytest.mark.parametrize("points", [-1, 7])
def test_level_outside_range_names_criterion(tmp_path: Path, points: int) -> None:
    err = _broken(tmp_path, lambda data: _criterion(data, "greeting")["levels"][1].update(points=points))
    assert f"criterion greeting (招呼语): level points {points} is outside 0..3" in err.problems
    assert all(p.startswith("criterion greeting (招呼语): ") for p in err.problems)  # 7 is also above max


def test_duplicate_level_points_name_criterion(tmp_path: Path) -> None:
    err = _broken(tmp_path, lambda data: _criterion(data, "closing")["levels"][1].update(points=0))
    assert err.problems == [
        "criterion closing (结束语): level points 0 appears 2 times; levels must be distinct"
    ]


def test_highest_level_below_max_names_criterion(tmp_path: Path) -> None:
    err = _broken(tmp_path, lambda data: _criterion(data, "tmall_rules")["levels"][-1].update(points=9))
    assert err.problems == [
        "criterion tmall_rules (熟悉天猫规则及操作): highest level is 9 but the criterion's maximum is 10"
    ]


def test_duplicate_ids_are_named(tmp_path: Path) -> None:
    err = _broken(tmp_path, lambda data: _criterion(data, "closing").update(id="greeting"))
    assert err.problems == ["id 'greeting' is used 2 times; ids must be unique"]


@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        ("criterion proactivity › weight", lambda data: _criterion(data, "proactivity").update(weight=2)),
        ("criterion proactivity › levels › [2] › pts",
         lambda data: _criterion(data, "proactivity")["levels"][2].update(pts=2)),
    ],
)
def test_unknown_key_names_criterion_and_key(
    tmp_path: Path, where: str, mutate: Callable[[dict[str, Any]], None]
) -> None:
    err = _broken(tmp_path, mutate)
    assert [p for p in err.problems if where in p] == [
        f"dimensions › id affinity › groups › id service_attitude › criteria › {where}: "
        "Extra inputs are not permitted"
    ]


def test_file_that_is_not_a_mapping_says_top_level(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert info.value.problems == ["(top level): Input should be a valid dictionary or instance of Rubric"]


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        _criterion(data, "greeting")["levels"][0]["points"] = -1
        _criterion(data, "closing")["levels"][1]["points"] = 0

    err = _broken(tmp_path, mutate)
    assert [p.split(":")[0] for p in err.problems] == [
        "criterion greeting (招呼语)", "criterion closing (结束语)"
    ]


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert info.value.path == str(path)
    assert info.value.problems == ["无法读取 (cannot read)：不存在 (not found)"]


def _edit_seed_text(tmp_path: Path, old: str, new: str) -> RubricError:
    text = SEED_RUBRIC.read_text(encoding="utf-8")
    assert text.count(old) == 1
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert info.value.path == str(path)
    return info.value


def test_bad_yaml_names_file_line_and_quotes_the_criterion(tmp_path: Path) -> None:
    err = _edit_seed_text(tmp_path, "- id: closing\n", "- id: closing: [\n")
    (problem,) = err.problems
    assert problem.startswith("not valid YAML: ")
    line = 1 + SEED_RUBRIC.read_text(encoding="utf-8").splitlines().index("          - id: closing")
    assert f'in "{tmp_path / "broken.yaml"}", line {line}' in problem
    assert "id: closing: [" in problem  # the quoted source line shows which criterion


def test_repeated_yaml_key_is_an_error_not_last_one_wins(tmp_path: Path) -> None:
    err = _edit_seed_text(tmp_path, "- id: closing\n", "- id: closing\n            max: 2\n")
    (problem,) = err.problems
    assert "found duplicate key 'max'" in problem
    assert "- id: closing" in problem


def test_non_utf8_file_is_a_rubric_error(tmp_path: Path) -> None:
    path = tmp_path / "gbk.yaml"
    path.write_bytes(SEED_RUBRIC.read_text(encoding="utf-8").encode("gb18030"))
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert re.fullmatch(r"不是 UTF-8 文本：第 \d+ 个字节无法解码，请另存为 UTF-8 \(not UTF-8 text: byte \d+ cannot be "
                        r"decoded; save it as UTF-8\)", info.value.problems[0])


# ---- hooks: caps and critical items --------------------------------------------------------------------


def test_seed_rubric_hooks_cite_seeds_and_leave_the_hash_alone() -> None:
    rubric = load_rubric(SEED_RUBRIC)
    assert [c.criterion for c in rubric.caps] == ["proactivity", "preprocessing"]
    assert [getattr(c, "criterion", None) for c in rubric.critical] == ["courtesy_patience"]
    assert all("Seed" in (h.note or "") or "seed" in (h.note or "") for h in [*rubric.caps, *rubric.critical])
    # Hooks act on stored grades at export: adding, changing or removing one re-grades nothing.
    bare = _seed_data()
    del bare["caps"], bare["critical"]
    assert Rubric.model_validate(bare).content_hash == rubric.content_hash


def _with_hooks(**hooks: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.update(hooks)


@pytest.mark.parametrize(
    ("hooks", "problem"),
    [
        ({"caps": [{"criterion": "proactivity", "cap": 0, "when": {"check": "max_wait", "above": 600}, "reason": "r"}]},
         "caps[0] (proactivity) › when › check: Value error, unknown check 'max_wait'"),
        ({"caps": [{"criterion": "proactivity", "cap": 0, "when": {"check": "greeting_found", "above": 1},
                    "reason": "r"}]},
         "caps[0] (proactivity) › when › check: Value error, check 'greeting_found' holds a flag"),
        ({"caps": [{"criterion": "proactivity", "cap": 0, "when": {"check": "max_wait_s", "above": 600, "below": 9},
                    "reason": "r"}]},
         "caps[0] (proactivity) › when: a condition needs exactly one of: above, at_least"),
        ({"caps": [{"criterion": "proactivity", "cap": 0,
                    "when": {"any": [{"check": "first_reply_status", "equals": "never"}]}, "reason": "r"}]},
         "caps[0] (proactivity) › when › any › [0] › equals: Value error, 'never' is not a value of "
         "first_reply_status"),
        ({"critical": [{"criterion": "courtesy_patience", "at_or_below": 0, "reason": "r"}, {"reason": "x"}]},
         "critical[1] (x): a critical item has either `criterion` with `at_or_below`, or `when`"),
        ({"caps": [{"criterion": "proactivty", "cap": 0, "when": {"check": "max_wait_s", "above": 1}, "reason": "r"}]},
         "caps[0] (proactivty): criterion 'proactivty' is not in the rubric"),
        ({"caps": [{"criterion": "greeting", "cap": 2, "when": {"check": "max_wait_s", "above": 1}, "reason": "r"}]},
         "caps[0] (greeting): cap 2 must be a level of greeting below its maximum (0/1)"),
        ({"critical": [{"criterion": "courtesy_patience", "at_or_below": 4, "reason": "r"}]},
         "critical[0] (courtesy_patience): at_or_below 4 must lie in 0..3, else it never or always fails the chat"),
    ],
)
def test_hook_errors_name_the_file_and_the_hook(tmp_path: Path, hooks: dict[str, Any], problem: str) -> None:
    err = _broken(tmp_path, _with_hooks(**hooks))
    assert [p for p in err.problems if p.startswith(problem)], err.problems


def test_judges_is_one_of_three_sides_and_does_not_change_the_resume_key(tmp_path: Path) -> None:
    seed = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    assert {c.judges for c in seed.criteria()} == {"agent"}  # the default: every seed criterion judges the agent
    err = _broken(tmp_path, lambda data: _criterion(data, "greeting").update(judges="boss"))
    assert any("greeting" in p and "judges" in p for p in err.problems)
    path = tmp_path / "any.yaml"
    data = yaml.safe_load((REPO / "rubric" / "ecommerce_cs.yaml").read_text(encoding="utf-8"))
    _criterion(data, "greeting")["judges"] = "any"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    changed = load_rubric(path)
    assert changed.criterion("greeting").judges == "any"
    assert changed.content_hash == seed.content_hash  # the model sees nothing of it
