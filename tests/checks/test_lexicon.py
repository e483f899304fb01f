"""Tests for pipeline/checks/lexicons.py and phrases.py against rubric/lexicons.yaml and lexicons built in the test."""

from __future__ import annotations

import copy
import json
import unicodedata
from pathlib import Path
from typing import Any

import opencc
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.checks.lexicons import MatchKind, PhraseGroup, load_lexicons, parse_lexicons
from pipeline.checks.phrases import PhraseChecker
from pipeline.errors import RubricError
from pipeline.inputs.transcripts import read_transcripts
from pipeline.models.transcript import Role, Transcript, Turn

LEXICONS = Path(__file__).resolve().parents[2] / "rubric" / "lexicons.yaml"


@pytest.fixture(scope="module")
def checker() -> PhraseChecker:
    return PhraseChecker(load_lexicons(LEXICONS))


def agent_says(*texts: str) -> Transcript:
    """A customer question followed by the agent's replies (agent turns are 2, 3, …)."""
    turns = [Turn(role=Role.customer, text="在吗")] + [Turn(role=Role.agent, text=t) for t in texts]
    return Transcript(id="t1", turns=turns)


def texts(checker: PhraseChecker, group: PhraseGroup, reply: str) -> list[str]:
    return [h.text for h in checker.find(group, reply)]


def test_repository_lexicons_load_and_cite_sources() -> None:
    lex = load_lexicons(LEXICONS)
    assert set(lex.groups) == set(PhraseGroup)
    assert all(e.source for g in lex.groups.values() for e in g.entries)


@pytest.mark.parametrize(
    "reply", ["哦", "哦。", "哦哦~", "嗯", "嗯嗯!!", "嗯！！", "嗯[微笑]", "/:) 嗯", "嗯😊", "嗯o(∩_∩)o"]
)
def test_bare_oh_and_um_are_banned_as_the_whole_reply(checker: PhraseChecker, reply: str) -> None:
    hits = checker.find(PhraseGroup.banned, reply)
    assert len(hits) == 1 and hits[0].text in ("哦", "哦哦", "嗯", "嗯嗯")


@pytest.mark.parametrize("reply", ["哦哦好的呢", "哦~您的眼光真不错", "嗯,这款是有现货的", "好的[OK]", "您知道吗"])
def test_oh_and_um_inside_a_longer_reply_are_fine(checker: PhraseChecker, reply: str) -> None:
    assert checker.find(PhraseGroup.banned, reply) == []


def test_only_agent_turns_are_checked(checker: PhraseChecker) -> None:
    t = Transcript(
        id="t1",
        turns=[
            Turn(role=Role.customer, text="哦"),
            Turn(role=Role.bot, text="嗯"),
            Turn(role=Role.agent, text="嗯"),
            Turn(role=Role.system, text="不行"),
        ],
    )
    report = checker.check(t)
    assert [(h.turn, h.group) for h in report.hits if h.group is PhraseGroup.banned] == [(3, PhraseGroup.banned)]
    assert report.agent_turns == 1 and report.counts[PhraseGroup.negation_refusal] == 0


def test_hits_report_original_text_and_offsets(checker: PhraseChecker) -> None:
    reply = "[微笑]亲,这样不行哦"
    (hit,) = checker.find(PhraseGroup.negation_refusal, reply)
    assert (hit.text, hit.start, hit.end, hit.suggestion) == ("不行", 8, 10, "无法…")
    assert reply[hit.start : hit.end] == "不行"


def test_compatibility_ideograph_is_matched_but_reported_as_written(checker: PhraseChecker) -> None:
    # U+F967 is the CJK compatibility form of 不; NFKC folds it, the report keeps it.
    reply = "这个价格\uf967能再低了"
    (hit,) = checker.find(PhraseGroup.negation_refusal, reply)
    assert hit.text == "\uf967能" and hit.pattern == "不能"


def test_emoticon_codes_never_produce_or_join_a_hit(checker: PhraseChecker) -> None:
    assert checker.find(PhraseGroup.negation_refusal, "不[微笑]行") == []
    assert checker.find(PhraseGroup.but_words, "但[抱拳]是") == []


@pytest.mark.parametrize(
    ("group", "reply", "expected"),
    [
        (PhraseGroup.negation_refusal, "您看这样安排行不行?", []),
        # 不行的话 is no exception: it hid the refusal of eval set demo-007.
        (PhraseGroup.negation_refusal, "尺码不行的话可以免费换哦", ["不行"]),
        (PhraseGroup.negation_refusal, "不行的话你自己上网查一下", ["不行"]),
        (PhraseGroup.negation_refusal, "这样不行", ["不行"]),
        (PhraseGroup.negation_refusal, "您那边能不能收到验证码?", []),
        (PhraseGroup.negation_refusal, "不能不说这款真的很划算", []),
        (PhraseGroup.negation_refusal, "活动价不能错过哦", []),
        (PhraseGroup.negation_refusal, "可不可以收到货再付款", []),
        (PhraseGroup.negation_refusal, "这个不可以退哦", ["不可以"]),
        (PhraseGroup.but_words, "这款不但是正品,还包邮哦", []),
        (PhraseGroup.but_words, "衣服很好看,但是没有现货了", ["但是"]),
        (PhraseGroup.honorifics, "这款是亲肤面料,亲子装也有", []),
        (PhraseGroup.honorifics, "亲,这款是亲肤面料", ["亲"]),
        # Seed 002 严禁用 (2) without 我, and 负面语言 (需要注意的方面 3); the polite forms stay allowed.
        (PhraseGroup.banned, "这个不知道", ["不知道"]),
        (PhraseGroup.banned, "这个不清楚", ["不清楚"]),
        (PhraseGroup.banned, "这个不大清楚呢", ["不大清楚"]),
        (PhraseGroup.banned, "我不大清楚", ["我不大清楚"]),
        (PhraseGroup.banned, "不知道您喜欢哪个颜色呢?", []),
        (PhraseGroup.banned, "有不清楚的地方随时问我哦", []),
        (PhraseGroup.negative_language, "这个我不会弄", ["我不会"]),
        (PhraseGroup.negative_language, "我不愿意再改了", ["我不愿意"]),
        (PhraseGroup.negative_language, "我不能给您改价", ["我不能"]),
        (PhraseGroup.negative_language, "我不可以私下退款", ["我不可以"]),
        (PhraseGroup.negative_language, "我不会让您失望的", []),
        (PhraseGroup.greetings, "您好像没有付款成功", []),
        (PhraseGroup.greetings, "您好，像这款是有现货的", ["您好"]),
    ],
)
def test_listed_phrases_and_the_longer_words_they_allow(
    checker: PhraseChecker, group: PhraseGroup, reply: str, expected: list[str]
) -> None:
    assert texts(checker, group, reply) == expected


def test_longest_overlapping_entry_wins(checker: PhraseChecker) -> None:
    (hit,) = checker.find(PhraseGroup.negation_refusal, "亲,真的不能便宜了")
    assert (hit.pattern, hit.suggestion) == ("不能便宜", "无法再低了")


def test_positive_checks(checker: PhraseChecker) -> None:
    good = checker.check(agent_says("您好,欢迎光临,很高兴为您服务", "有现货的呢", "感谢您的惠顾,祝您购物愉快~"))
    assert (good.honorific_used, good.greeting_found, good.closing_found) == (True, True, True)
    # The opener only counts in the first reply, the farewell only in the last.
    late = checker.check(agent_says("有的", "您好,欢迎光临", "再见", "好的"))
    assert (late.honorific_used, late.greeting_found, late.closing_found) == (True, False, False)
    rude = checker.check(agent_says("有", "自己选吧"))
    assert rude.honorific_used is False and rude.counts[PhraseGroup.banned] == 1


def test_no_agent_reply_gives_none_not_false(checker: PhraseChecker) -> None:
    report = checker.check(Transcript(id="t", turns=[Turn(role=Role.customer, text="在吗")]))
    assert (report.honorific_used, report.greeting_found, report.closing_found) == (None, None, None)
    assert report.refusal_first_words_ok is None


def test_refusal_must_open_with_apology(checker: PhraseChecker) -> None:
    report = checker.check(
        agent_says(
            "非常抱歉,这个价格不能再便宜了",  # turn 2: ok
            "亲,非常抱歉,宝贝已经是最低价了,无法再低了",  # turn 3: address first is allowed; 无法 triggers
            "不好意思,这个不能便宜哦",  # turn 4: refusal without the apology
            "无法再低了[抱拳]",  # turn 5: the prescribed replacement alone still needs the apology
            "好的亲,马上为您发货",  # turn 6: not a refusal
        )
    )
    assert [(r.turn, r.opens_with_apology) for r in report.refusals] == [
        (2, True),
        (3, True),
        (4, False),
        (5, False),
    ]
    assert report.refusals[2].triggered_by == "不好意思" and report.refusals[2].first_words.startswith("不好意思")
    assert report.refusal_first_words_ok is False


def test_columns_are_flat_and_json_friendly(checker: PhraseChecker) -> None:
    cols = checker.check(agent_says("嗯", "但是这个不行", "非常抱歉,无法帮到您")).columns()
    assert cols == {
        "banned_hits": 1,
        "negation_refusal_hits": 1,
        "negative_language_hits": 0,
        "but_words_hits": 1,
        "honorific_used": True,
        "greeting_found": False,
        "closing_found": False,
        "refusal_replies": 2,
        "refusals_without_apology": 1,
        "refusal_first_words_ok": False,
        "phrase_hits": cols["phrase_hits"],
    }
    assert [h["text"] for h in json.loads(str(cols["phrase_hits"]))] == ["嗯", "但是", "不行"]


def test_hits_across_replies_keep_each_reply_own_offsets(checker: PhraseChecker) -> None:
    # Replies are matched as a whole transcript, so pin that nothing leaks from one reply to the next.
    t = Transcript(
        id="t1",
        turns=[
            Turn(role=Role.customer, text="在吗"),
            Turn(role=Role.agent, text="您好，请问有什么可以帮助您"),  # 2
            Turn(role=Role.customer, text="不"),
            Turn(role=Role.agent, text="亲，这个价格真的不"),  # 4: ends in 不 …
            Turn(role=Role.agent, text="能再低了，㈱不行哦"),  # 5: … and this starts with 能: no 不能 across them
            Turn(role=Role.agent, text="能不能先拍下"),  # 6: 能不能 is an exception
            Turn(role=Role.agent, text="不能便宜了"),  # 7: the exception in turn 6 does not reach here
            Turn(role=Role.bot, text="嗯"),
            Turn(role=Role.agent, text="嗯嗯～[微笑]"),  # 9
        ],
    )
    report = checker.check(t)
    assert [(h.turn, h.group.value, h.text, h.start, h.end) for h in report.hits] == [
        # 您 and 您好 both start at 0: same start, so the group order decides (honorifics first).
        (2, "honorifics", "您", 0, 1),
        (2, "greetings", "您好", 0, 2),
        (2, "greetings", "有什么可以帮助您", 5, 13),
        (2, "honorifics", "您", 12, 13),
        (4, "honorifics", "亲", 0, 1),
        # ㈱ is one character that NFKC makes three, (株); the hit is reported at its original offsets 6–8.
        (5, "negation_refusal", "不行", 6, 8),
        (7, "negation_refusal", "不能便宜", 0, 4),
        (9, "banned", "嗯嗯", 0, 2),
    ]
    assert [(r.turn, r.opens_with_apology, r.first_words, r.triggered_by) for r in report.refusals] == [
        (5, False, "能再低了株不行哦", "不行"),
        (7, False, "不能便宜了", "不能便宜"),
    ]
    assert (report.agent_turns, report.honorific_used, report.greeting_found, report.closing_found) == (
        6, True, True, False
    )


def small_lexicon() -> dict[str, Any]:
    group = {"description": "d", "entries": [{"pattern": "好", "source": "s"}]}
    return {
        "version": "t",
        "emoticons": [{"pattern": r"\[[^\[\]]{1,8}\]", "note": "codes"}],
        "refusal_rule": {"source": "s", "rule": "r", "openers": ["非常抱歉"]},
        "groups": {g.value: copy.deepcopy(group) for g in PhraseGroup},
    }


def test_exceptions_are_configurable() -> None:
    data = small_lexicon()
    data["groups"]["negation_refusal"]["entries"] = [{"pattern": "不行", "source": "s"}]
    bare = PhraseChecker(parse_lexicons(data, "test"))
    assert texts(bare, PhraseGroup.negation_refusal, "您看行不行") == ["不行"]
    data["groups"]["negation_refusal"]["exceptions"] = ["行不行"]
    shared = PhraseChecker(parse_lexicons(data, "test"))
    assert texts(shared, PhraseGroup.negation_refusal, "您看行不行") == []


def test_regex_and_full_width_entries() -> None:
    data = small_lexicon()
    data["groups"]["negation_refusal"]["entries"] = [
        {"pattern": "不(讲|还)价", "match": "regex", "source": "s", "exceptions": ["从不讲价格"]}
    ]
    data["groups"]["closings"]["entries"] = [{"pattern": "７天无理由", "source": "s"}]
    checker = PhraseChecker(parse_lexicons(data, "test"))
    assert texts(checker, PhraseGroup.negation_refusal, "本店不还价哦") == ["不还价"]
    assert texts(checker, PhraseGroup.negation_refusal, "我们从不讲价格以外的条件") == []
    # The full-width entry matches half-width text and the other way round.
    assert texts(checker, PhraseGroup.closings, "支持7天无理由退换") == ["7天无理由"]
    assert texts(checker, PhraseGroup.closings, "支持７天无理由退换") == ["７天无理由"]


def test_regex_entries_see_one_reply_and_ties_go_to_the_earlier_entry() -> None:
    data = small_lexicon()
    data["groups"]["negation_refusal"]["entries"] = [{"pattern": "^好", "match": "regex", "source": "s"}]
    whole_first = [
        {"pattern": "哦", "match": "whole", "source": "s"},
        {"pattern": "哦+", "match": "regex", "source": "s"},
    ]
    data["groups"]["banned"]["entries"] = whole_first
    checker = PhraseChecker(parse_lexicons(data, "test"))
    report = checker.check(agent_says("不好", "好呀", "哦哦"))
    # ^ anchors at the start of each reply (turn 3), never at the start of the transcript only.
    assert [(h.turn, h.text) for h in report.hits if h.group is PhraseGroup.negation_refusal] == [(3, "好")]
    # Both entries match all of 哦哦 (turn 4): equal start and length, so the first listed wins.
    assert [h.pattern for h in report.hits if h.group is PhraseGroup.banned] == ["哦"]
    data["groups"]["banned"]["entries"] = whole_first[::-1]
    swapped = PhraseChecker(parse_lexicons(data, "test")).check(agent_says("哦哦"))
    assert [h.pattern for h in swapped.hits if h.group is PhraseGroup.banned] == ["哦+"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="red"), "Extra inputs are not permitted"),
        (lambda d: d["groups"].pop("closings"), "groups missing"),
        (lambda d: d["groups"].update(rude={"description": "d", "entries": []}), "rude"),
        (lambda d: d["groups"]["banned"]["entries"][0].update(exceptions=["坏的"]), "never apply"),
        (
            lambda d: d["groups"]["banned"]["entries"][0].update(match="whole", exceptions=["好的"]),
            "whole-reply",
        ),
        (
            lambda d: d["groups"]["banned"]["entries"][0].update(match="regex", pattern="(好"),
            "regular expression",
        ),
        (lambda d: d["groups"]["banned"].update(exceptions=["坏"]), "contain none"),
        (lambda d: d["groups"]["banned"]["entries"].append({"pattern": "好", "source": "s"}), "listed twice"),
    ],
)
def test_invalid_lexicons_are_rejected_with_the_reason(change: Any, message: str) -> None:
    data = small_lexicon()
    change(data)
    with pytest.raises(RubricError, match=message) as info:
        parse_lexicons(data, "bad.yaml")
    assert info.value.path == "bad.yaml"


def test_load_reports_bad_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "lex.yaml"
    bad.write_text("groups: [unclosed", encoding="utf-8")
    with pytest.raises(RubricError, match="not valid YAML"):
        load_lexicons(bad)
    good = tmp_path / "ok.yaml"
    good.write_text(yaml.safe_dump(small_lexicon(), allow_unicode=True), encoding="utf-8")
    assert load_lexicons(good).version == "t"


def test_a_gbk_lexicon_or_a_repeated_key_is_refused_in_words(tmp_path: Path) -> None:
    text = LEXICONS.read_text(encoding="utf-8")
    gbk = tmp_path / "gbk.yaml"
    gbk.write_bytes(text.encode("gb18030"))
    with pytest.raises(RubricError, match=r"^.*不是 UTF-8 文本：第 \d+ 个字节无法解码") as info:
        load_lexicons(gbk)
    assert info.value.path == str(gbk)
    # A second `banned:` would replace the first, and its phrases would silently go unchecked.
    twice = tmp_path / "twice.yaml"
    twice.write_text(text.replace("  banned:\n", "  banned:\n    description: x\n", 1), encoding="utf-8")
    with pytest.raises(RubricError, match="found duplicate key 'description'"):
        load_lexicons(twice)


# --- traditional characters and split phrases ----------------------------------------------------


@pytest.mark.parametrize(
    ("group", "reply", "expected"),
    [
        (PhraseGroup.banned, "我找不到人問", "我找不到人問"),
        (PhraseGroup.banned, "自己選吧", "自己選吧"),
        (PhraseGroup.negative_language, "我不會", "我不會"),
        (PhraseGroup.banned, "亲,自己，选吧", "自己，选吧"),
        (PhraseGroup.banned, "我不大　清楚", "我不大　清楚"),
        (PhraseGroup.negation_refusal, "这个不 可 以退", "不 可 以"),
        (PhraseGroup.negation_refusal, "這個不，行", "不，行"),
    ],
)
def test_traditional_and_split_phrases_match_and_report_as_written(
    checker: PhraseChecker, group: PhraseGroup, reply: str, expected: str
) -> None:
    (hit,) = checker.find(group, reply)
    assert hit.text == expected and reply[hit.start : hit.end] == expected


def test_demo_007_refusal_is_flagged(checker: PhraseChecker) -> None:
    chats = read_transcripts([LEXICONS.parent.parent / "eval_sets" / "ecommerce_cs.jsonl"])
    demo = next(t for t in chats if isinstance(t, Transcript) and t.id == "demo-007")
    hits = [(h.group, h.text) for h in checker.check(demo).hits]
    assert (PhraseGroup.negation_refusal, "不行") in hits


# --- properties of the phrase matcher ------------------------------------------------------------

_LEX = load_lexicons(LEXICONS)
_SUBSTRING = [
    (group, entry.pattern)
    for group, spec in _LEX.groups.items()
    for entry in spec.entries
    if entry.match is MatchKind.substring
]
_GAPS = st.text(alphabet=" \u3000\t，,。.！!？?、~～…-·：:；;", max_size=3)
"""Spaces and punctuation an agent may put inside a phrase (no brackets, '/' or parentheses: those start 表情 codes)."""
_TO_TRADITIONAL = opencc.OpenCC("s2t").convert


@given(st.sampled_from(_SUBSTRING), st.data())
def test_spaces_and_punctuation_inside_a_phrase_still_match(
    checker: PhraseChecker, listed: tuple[PhraseGroup, str], data: st.DataObject
) -> None:
    group, phrase = listed
    gaps = [data.draw(_GAPS) for _ in phrase[1:]]
    split = phrase[0] + "".join(g + ch for g, ch in zip(gaps, phrase[1:], strict=True))
    reply = f"好的。{split}。"
    assert (split, 3, 3 + len(split)) in [(h.text, h.start, h.end) for h in checker.find(group, reply)]


@pytest.mark.parametrize(("group", "phrase"), _SUBSTRING)
def test_every_phrase_matches_in_traditional_characters(checker: PhraseChecker, group: PhraseGroup,
                                                        phrase: str) -> None:
    traditional = _TO_TRADITIONAL(phrase)
    reply = f"好的。{traditional}。"
    assert (traditional, 3, 3 + len(traditional)) in [(h.text, h.start, h.end) for h in checker.find(group, reply)]


_LISTED_CHARS = {ch for spec in _LEX.groups.values() for e in spec.entries for ch in e.pattern}
_TO_SIMPLIFIED = opencc.OpenCC("t2s").convert
_ANY_CHAR = st.characters(codec=None, exclude_categories=[])
"""Every code point, lone surrogates and controls included."""


def _near_listed(ch: str) -> bool:
    """Whether the character, or what the matcher folds it to, is in some listed phrase."""
    return bool(set(ch + _TO_SIMPLIFIED(unicodedata.normalize("NFKC", ch))) & _LISTED_CHARS)


@given(st.lists(st.text(st.characters(codec="utf-8").filter(lambda c: not _near_listed(c)), max_size=40),
                min_size=1, max_size=4))
def test_text_without_a_listed_character_has_no_hit(checker: PhraseChecker, replies: list[str]) -> None:
    assert checker.check(agent_says(*replies)).hits == []


@given(st.lists(st.text(st.one_of(_ANY_CHAR, st.sampled_from("不行能您好亲嗯哦但是自己选吧我会問選，。 [微笑]")),
                        max_size=40), min_size=1, max_size=4))
def test_hits_point_into_the_original_reply(checker: PhraseChecker, replies: list[str]) -> None:
    report = checker.check(agent_says(*replies))
    for hit in report.hits:
        reply = replies[hit.turn - 2]
        assert 0 <= hit.start < hit.end <= len(reply) and reply[hit.start : hit.end] == hit.text
