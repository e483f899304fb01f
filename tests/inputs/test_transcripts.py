"""The transcript readers: JSONL, long CSV and chat-log text, their rejects, timestamps and tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.errors import ConfigError, InputError
from pipeline.inputs.decoding import SNIFF_BYTES
from pipeline.inputs.files import count_jsonl_lines
from pipeline.inputs.ids import _SeenIds
from pipeline.inputs.rejects import write_rejects
from pipeline.inputs.times import parse_time
from pipeline.inputs.tokens import estimate_tokens
from pipeline.inputs.transcripts import TranscriptReader, read_transcripts
from pipeline.models.transcript import Reject, Role, Transcript

SHANGHAI = ZoneInfo("Asia/Shanghai")
FORMATS_DIR = Path(__file__).resolve().parents[2] / "eval_sets" / "formats"


def split(items: Iterator[Transcript | Reject]) -> tuple[list[Transcript], list[Reject]]:
    """Transcripts and rejects apart, each in input order."""
    transcripts: list[Transcript] = []
    rejects: list[Reject] = []
    for item in items:
        if isinstance(item, Transcript):
            transcripts.append(item)
        else:
            rejects.append(item)
    return transcripts, rejects


def read_one(path: Path, content: str | bytes, **options: Any) -> tuple[list[Transcript], list[Reject]]:
    """Write `content` to `path` and read it back with `options` for read_transcripts."""
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return split(read_transcripts([path], **options))


def conv(conv_id: str, *turns: tuple[str, str], **extra: object) -> str:
    return json.dumps({"id": conv_id, "turns": [{"role": r, "text": t} for r, t in turns], **extra},
                      ensure_ascii=False)


GOOD = conv("ok", ("customer", "在吗"), ("agent", "亲，在的"))


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_reads_roles_metadata_times_and_ignores_unknown_keys(tmp_path: Path) -> None:
    line = json.dumps({
        "id": 1001, "platform": "taobao", "shop": "小鹿家居", "agent_id": "小鹿家居:小美",
        "order_no": "ignored",
        "turns": [
            {"role": "买家", "text": "这款是纯棉的吗", "time": "2026-03-02 10:15:03", "speaker": "tb_xm",
             "x": 1},
            {"role": "Assistant", "text": "", "time": "2026-03-02 10:15:04"},
            {"role": " 客服 ", "text": "亲，是100%纯棉的", "time": "2026-03-02T10:15:40Z"},
            {"role": "自动回复", "text": "[自动回复]感谢光临"},
            {"role": "系统", "text": "用户发送了一张图片", "time": 1772417703},
        ],
    }, ensure_ascii=False)
    transcripts, rejects = read_one(tmp_path / "a.jsonl", line + "\n")

    assert rejects == []
    [t] = transcripts
    assert (t.id, t.platform, t.shop, t.agent_id, t.source) == (
        "1001", "taobao", "小鹿家居", "小鹿家居:小美", f"{tmp_path / 'a.jsonl'}:1")
    # The empty-text turn (an image or sticker in most exports) is dropped.
    assert [turn.role for turn in t.turns] == [Role.customer, Role.agent, Role.bot, Role.system]
    assert t.turns[0].speaker == "tb_xm"
    assert t.turns[0].time == datetime(2026, 3, 2, 10, 15, 3, tzinfo=SHANGHAI)
    assert t.turns[1].time is not None and t.turns[1].time.utcoffset() == timedelta(0)
    assert t.turns[2].time is None
    # 1772417703 s = 2026-03-02 02:15:03 UTC = 10:15:03 Beijing time.
    assert t.turns[3].time == datetime(2026, 3, 2, 10, 15, 3, tzinfo=SHANGHAI)


@pytest.mark.parametrize(("bad_line", "field", "reason_part"), [
    ('{"id": "x", "turns": [', None, "not valid JSON"),
    ('"just a string"', None, "expected a JSON object"),
    ('{"turns": [{"role": "customer", "text": "hi"}]}', "id", "missing field 'id'"),
    ('{"id": ["x"], "turns": []}', "id", "'id' must be a string, got a list"),
    ('{"id": "  ", "turns": []}', "id", "empty 'id'"),
    ('{"id": "x"}', "turns", "missing field 'turns'"),
    ('{"id": "x", "turns": "hello"}', "turns", "'turns' must be a list"),
    ('{"id": "x", "turns": []}', "turns", "no turns"),
    ('{"id": "x", "turns": ["hi"]}', "turns[0]", "turns[0] must be an object"),
    ('{"id": "x", "turns": [{"role": "customer", "text": "hi"}, {"role": "坐席", "text": "好"}]}',
     "turns[1].role", "unknown role '坐席'"),
    ('{"id": "x", "turns": [{"text": "hi"}]}', "turns[0].role", "missing field 'role'"),
    ('{"id": "x", "turns": [{"role": "customer"}]}', "turns[0].text", "missing field 'text'"),
    ('{"id": "x", "turns": [{"role": "customer", "text": " "}, {"role": "agent", "text": ""}]}',
     "turns", "every turn has empty text"),
    ('{"id": "x", "turns": [{"role": "customer", "text": "hi", "time": "2026-13-01 25:00"}]}',
     "turns[0].time", "bad timestamp '2026-13-01 25:00'"),
    ('{"id": "x", "platform": {"name": "tb"}, "turns": [{"role": "customer", "text": "hi"}]}',
     "platform", "'platform' must be a string, got an object"),
])
def test_jsonl_each_bad_line_is_one_reject_and_reading_goes_on(
    tmp_path: Path, bad_line: str, field: str | None, reason_part: str
) -> None:
    content = "\n".join([GOOD, bad_line, conv("ok2", ("user", "好的"))]) + "\n"
    transcripts, rejects = read_one(tmp_path / "a.jsonl", content)

    assert [t.id for t in transcripts] == ["ok", "ok2"]
    [reject] = rejects
    assert (reject.file, reject.line, reject.field) == (str(tmp_path / "a.jsonl"), 2, field)
    assert reason_part in reject.reason


def test_jsonl_1000_lines_with_3_bad_yield_997_transcripts_and_3_rejects(tmp_path: Path) -> None:
    bad = {17: "{oops", 500: '{"id": "c500", "turns": [{"role": "?", "text": "hi"}]}', 1000: '{"id": "c999"}'}
    lines = [bad.get(n, conv(f"c{n}", ("customer", f"问题{n}"), ("agent", "好"))) for n in range(1, 1001)]
    transcripts, rejects = read_one(tmp_path / "big.jsonl", "\n".join(lines) + "\n")

    assert len(transcripts) == 997
    assert [r.line for r in rejects] == [17, 500, 1000]
    assert [r.transcript_id for r in rejects] == [None, "c500", "c999"]


def test_a_json_array_file_is_one_reject_that_says_how_to_convert(tmp_path: Path) -> None:
    transcripts, rejects = read_one(tmp_path / "all.json", "[" + GOOD + "]\n")

    assert transcripts == []
    [reject] = rejects
    assert reject.line == 1 and "not JSON Lines" in reject.reason


def test_an_undecodable_jsonl_line_is_rejected_with_its_line_number(tmp_path: Path) -> None:
    content = (GOOD + "\n").encode() + b'{"id": "x", "turns": [{"role": "customer", "text": "\xff\xfe"}]}\n'
    content += (conv("b", ("customer", "在吗")) + "\n").encode()
    transcripts, rejects = read_one(tmp_path / "a.jsonl", content)

    assert [t.id for t in transcripts] == ["ok", "b"]
    [reject] = rejects
    assert reject.line == 2 and "undecodable bytes on line 2" in reject.reason


# --- ids, files and directories ------------------------------------------------------------------


def test_duplicate_ids_are_rejected_within_and_across_files_and_formats(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(f"{GOOD}\n{conv('two', ('customer', 'x'))}\n{GOOD}\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("conversation_id,role,text\ntwo,customer,再问一次\n", encoding="utf-8")

    transcripts, rejects = split(read_transcripts([tmp_path / "a.jsonl", tmp_path / "b.csv"]))

    assert [t.id for t in transcripts] == ["ok", "two"]
    assert [(r.file, r.line, r.transcript_id) for r in rejects] == [
        (str(tmp_path / "a.jsonl"), 3, "ok"), (str(tmp_path / "b.csv"), 2, "two")]
    assert "already read earlier in this file" in rejects[0].reason
    assert f"already read from {tmp_path / 'a.jsonl'}" in rejects[1].reason


def test_directories_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text(conv("from-b", ("customer", "在吗")) + "\n", encoding="utf-8")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("conversation_id,role,text\nfrom-a,客户,在吗\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# notes\n", encoding="utf-8")
    (tmp_path / ".hidden.jsonl").write_text("not json\n", encoding="utf-8")

    # The directory and a file inside it: the file is read once.
    items = list(read_transcripts([tmp_path, tmp_path / "b.jsonl"]))

    assert [(type(i).__name__, getattr(i, "id", None)) for i in items] == [
        ("Transcript", "from-a"), ("Transcript", "from-b"), ("Reject", None)]
    reject = items[2]
    assert isinstance(reject, Reject)
    assert reject.file == str(tmp_path / "notes.md") and "not read: .md" in reject.reason


def test_the_progress_total_counts_nested_jsonl_lines_and_gives_up_on_other_formats(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jsonl").write_text("1\n\n2\n  \n3", encoding="utf-8")  # blank lines are not chats
    (tmp_path / "b.JSON").write_text("4\n5\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# not read\n", encoding="utf-8")
    (tmp_path / ".hidden.jsonl").write_text("6\n", encoding="utf-8")

    assert count_jsonl_lines([tmp_path]) == 5
    (tmp_path / "a" / "y.csv").write_text("conversation_id,role,text\n", encoding="utf-8")
    assert count_jsonl_lines([tmp_path]) is None  # CSV rows are not conversations
    with pytest.raises(InputError, match="not found"):
        count_jsonl_lines([tmp_path / "missing.jsonl"])


def test_a_missing_path_or_unknown_kind_of_named_file_raises_before_reading(tmp_path: Path) -> None:
    (tmp_path / "orders.xlsx").write_bytes(b"PK")
    with pytest.raises(InputError, match="not found"):
        read_transcripts([tmp_path / "missing.jsonl"])  # not iterated: the check is eager
    with pytest.raises(InputError, match=r"unknown kind of file '\.xlsx'"):
        read_transcripts([tmp_path / "orders.xlsx"])


def test_an_empty_or_unreadable_file_is_a_reject(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"\n\n")
    (tmp_path / "dir.jsonl").mkdir()
    reader = TranscriptReader()

    [empty] = reader.read_file(tmp_path / "empty.jsonl", "jsonl")
    [unreadable] = reader.read_file(tmp_path / "dir.jsonl", "jsonl")

    assert isinstance(empty, Reject) and "no conversations found" in empty.reason
    assert isinstance(unreadable, Reject) and "cannot read the file" in unreadable.reason


def test_the_reader_is_lazy_it_reads_no_further_than_the_encoding_window(tmp_path: Path) -> None:
    line = (conv("c", ("customer", "在吗" * 20), ("agent", "亲，在的")) + "\n").encode()
    pulled = 0

    def counting_lines() -> Iterator[bytes]:
        nonlocal pulled
        for n in range(20 * SNIFF_BYTES // len(line)):  # about 20 windows' worth of input
            pulled += len(line)
            yield line.replace(b'"c"', f'"c{n}"'.encode())

    items = TranscriptReader().read_lines(counting_lines(), source="stream.jsonl", fmt="jsonl")
    first = next(items)

    assert isinstance(first, Transcript) and first.id == "c0"
    # The encoding window plus the one line that crossed it; nothing more.
    assert pulled <= SNIFF_BYTES + len(line) + 8
    assert sum(1 for _ in items) == 20 * SNIFF_BYTES // len(line) - 1


def test_seen_ids_stay_exact_through_many_doublings() -> None:
    seen = _SeenIds(slots_log2=1)  # two slots: forces a dozen doublings and wrap-around at the table's end
    ids = [f"conv-{n}" for n in range(5000)]

    assert all(seen.add(conv_id, n % 7) is None for n, conv_id in enumerate(ids))
    assert [seen.add(conv_id, 99) for conv_id in ids] == [n % 7 for n in range(5000)]
    assert len(seen) == 5000
    assert seen.nbytes == 8192 * 12  # 5000 / 0.7 needs 8192 slots of 8 + 4 bytes


# --- CSV -----------------------------------------------------------------------------------------

CSV_TEXT = """conversation_id,role,text,time,platform,shop,agent_id,note
c1,顾客,请问能放微波炉吗,2026-03-03 09:01:10,taobao,青禾杯具,青禾杯具:阿青,x
c1,客服,"可以的，
放心使用~",2026/03/03 09:01:45,taobao,青禾杯具,青禾杯具:阿青,y
c2,customer,退货地址发我一下,,,,,
c2,bot,【自动回复】请在订单页申请,,,,,
"""


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_csv_reads_utf8_with_or_without_bom_and_gbk(tmp_path: Path, encoding: str) -> None:
    transcripts, rejects = read_one(tmp_path / "a.csv", CSV_TEXT.encode(encoding))

    assert rejects == []
    c1, c2 = transcripts
    assert (c1.id, c1.platform, c1.shop, c1.agent_id, c1.source) == (
        "c1", "taobao", "青禾杯具", "青禾杯具:阿青", f"{tmp_path / 'a.csv'}:2")
    assert [t.text for t in c1.turns] == ["请问能放微波炉吗", "可以的，\n放心使用~"]
    assert c1.turns[1].time == datetime(2026, 3, 3, 9, 1, 45, tzinfo=SHANGHAI)
    assert (c2.source, c2.platform, [t.role for t in c2.turns]) == (
        f"{tmp_path / 'a.csv'}:5", None, [Role.customer, Role.bot])


@pytest.mark.parametrize(("rows", "line", "field", "reason_part"), [
    ("c1,customer,hi\nc2,agent,hello\nc1,agent,again\n", 4, "conversation_id",
     "conversation split across non-adjacent rows"),
    ("c1,customer,hi\nc1,坐席,hello\n", 3, "role", "unknown role '坐席'"),
    ("c1,customer,hi\nc1,agent\n", 3, "text", "missing field 'text'"),
    ("c1,customer,hi,yesterday\n", 2, "time", "bad timestamp 'yesterday'"),
    ("c1,customer, \nc1,agent,\n", 2, None, "every message has empty text"),
    (",customer,hi\n", 2, "conversation_id", "empty conversation_id"),
    ('c1,customer,"hi\nc2,agent,hello\n', 2, None, "never closed"),
])
def test_csv_rejects_name_the_line_and_column(
    tmp_path: Path, rows: str, line: int, field: str | None, reason_part: str
) -> None:
    _, rejects = read_one(tmp_path / "a.csv", "conversation_id,role,text,time\n" + rows)

    [reject] = [r for r in rejects if r.line == line]
    assert reject.field == field and reason_part in reject.reason


def test_csv_bad_rows_reject_only_their_conversation(tmp_path: Path) -> None:
    rows = "a,customer,在吗\nb,customer,hi\nb,staff,hello\nb,nobody,x\nc,buyer,好\n"
    transcripts, rejects = read_one(tmp_path / "a.csv", "conversation_id,role,text\n" + rows)

    assert [t.id for t in transcripts] == ["a", "c"]
    assert [(r.transcript_id, r.line) for r in rejects] == [("b", 5)]


def test_csv_missing_column_rejects_the_file(tmp_path: Path) -> None:
    transcripts, rejects = read_one(tmp_path / "a.csv", "id,role,content\n1,customer,hi\n")

    assert transcripts == []
    [reject] = rejects
    assert (reject.line, reject.field) == (1, "conversation_id")
    assert "missing column 'conversation_id'" in reject.reason and "id, role, content" in reject.reason


def test_a_csv_header_naming_a_column_twice_rejects_the_file_naming_both(tmp_path: Path) -> None:
    """Two `text` columns (an export joined with a translation, say): reading the first dropped the second."""
    content = "conversation_id,role,text,time,Text\nc,customer,在吗,,hi\nc,agent,亲,,hello\n"
    transcripts, rejects = read_one(tmp_path / "a.csv", content)

    assert transcripts == []
    [reject] = rejects
    assert (reject.line, reject.field) == (1, "text")
    assert reject.reason == "column 'text' appears twice in the CSV header (columns 3 and 5): rename or remove one"


def test_an_undecodable_line_in_a_gbk_csv_rejects_that_conversation(tmp_path: Path) -> None:
    content = "conversation_id,role,text\na,客户,在吗\na,客服,在的\n".encode("gbk")
    content += b"b,\xbf\xcd\xbb\xa7,\x80\xff\n" + "c,客户,好的\n".encode("gbk")
    transcripts, rejects = read_one(tmp_path / "a.csv", content)

    assert [t.id for t in transcripts] == ["a", "c"]
    [reject] = rejects
    assert (reject.transcript_id, reject.line) == ("b", 4)
    assert "undecodable bytes on line 4 (not valid GBK" in reject.reason


def test_the_encoding_is_decided_by_the_first_non_ascii_line_even_after_the_window(tmp_path: Path) -> None:
    ascii_rows = "".join(f"c{n},customer,hello\n" for n in range(SNIFF_BYTES // 10))
    content = ("conversation_id,role,text\n" + ascii_rows).encode() + "z,客户,退货\n".encode("gbk")
    transcripts, rejects = read_one(tmp_path / "a.csv", content)

    assert rejects == []
    assert transcripts[-1].turns[0].text == "退货"


@pytest.mark.parametrize(("content", "reason_part"), [
    ("conversation_id,role,text\nc,客户,在吗\n".encode("utf-16"), "NUL bytes"),
    (b"conversation_id,role,text\n" + b"c,\xff\xff\xff,\x80\x80\n" * 5, "neither UTF-8 nor GBK"),
])
def test_a_file_in_another_encoding_is_one_reject(tmp_path: Path, content: bytes, reason_part: str) -> None:
    transcripts, rejects = read_one(tmp_path / "a.csv", content)

    assert transcripts == []
    [reject] = rejects
    assert reason_part in reject.reason


# --- chat-log text -------------------------------------------------------------------------------

CHATLOG = """===== 会话 ID: qn-1 =====
2026-03-05 10:00:12 tb_zhang3: 在吗，有现货吗
2026-03-05 10:00:13 小厨当家:小厨: [自动回复]您好，欢迎光临
2026-03-05 10:00:45 小厨当家:阿福: 亲，在的
今天下单明天发出

2026-03-05 10:01:30 tb_zhang3:内胆是什么材质的
---- conversation qn-2 ----
tb_wang5 2026/03/05 15:30:00
我买的锅盖有裂纹
小厨当家:阿福 (2026-03-05 15:31:10):
非常抱歉！
马上给您补发
# conversation: qn-3
2026-03-05 16:00:00 买家小王: 发什么快递
2026-03-05 16:00:30 店小蜜机器人: 默认发中通哦
2026-03-05 16:00:31 系统: 客服阿福已接入
"""


def test_chatlog_reads_both_layouts_multiline_messages_and_separators(tmp_path: Path) -> None:
    transcripts, rejects = read_one(tmp_path / "log.txt", CHATLOG)

    assert rejects == []
    qn1, qn2, qn3 = transcripts
    assert (qn1.id, qn1.source) == ("qn-1", f"{tmp_path / 'log.txt'}:1")
    assert [(t.speaker, t.role) for t in qn1.turns] == [
        ("tb_zhang3", Role.customer), ("小厨当家:小厨", Role.bot), ("小厨当家:阿福", Role.agent),
        ("tb_zhang3", Role.customer)]
    assert qn1.turns[2].text == "亲，在的\n今天下单明天发出"
    assert qn1.turns[3].text == "内胆是什么材质的"
    # One agent, a 旺旺 sub-account: its main account is the shop.
    assert (qn1.agent_id, qn1.shop) == ("小厨当家:阿福", "小厨当家")
    assert (qn2.id, qn2.source) == ("qn-2", f"{tmp_path / 'log.txt'}:8")
    assert [(t.speaker, t.text) for t in qn2.turns] == [
        ("tb_wang5", "我买的锅盖有裂纹"), ("小厨当家:阿福", "非常抱歉！\n马上给您补发")]
    assert qn2.turns[0].time == datetime(2026, 3, 5, 15, 30, tzinfo=SHANGHAI)
    assert [t.role for t in qn3.turns] == [Role.customer, Role.bot, Role.system]


def test_a_single_string_as_a_nickname_list_is_refused(tmp_path: Path) -> None:
    # tuple("森屿-") would be ("森", "屿", "-"): every nickname starting with 森 would count as the shop.
    with pytest.raises(ConfigError, match="shop_prefixes must be a list"):
        read_transcripts([tmp_path], shop_prefixes="森屿-")


def test_chatlog_speaker_options_map_nicknames_to_roles(tmp_path: Path) -> None:
    log = ("2026-03-05 10:00:00 顾客甲: 在吗\n2026-03-05 10:00:05 阿福: 在的\n"
           "2026-03-05 10:00:06 森屿-小雨: 我也在\n2026-03-05 10:00:07 FAQ助手: 常见问题见详情页\n")
    transcripts, rejects = read_one(tmp_path / "飞鸽导出.log", log, shop_speakers={"阿福"},
                                    shop_prefixes=["森屿-"], bot_speakers=["FAQ助手"])

    assert rejects == []
    [t] = transcripts
    assert t.id == "飞鸽导出"  # no separator: the file is one conversation named after it
    assert [turn.role for turn in t.turns] == [Role.customer, Role.agent, Role.agent, Role.bot]
    assert (t.agent_id, t.shop) == (None, None)  # two agents, not sub-accounts of one shop


@pytest.mark.parametrize(("log", "line", "field", "reason_part"), [
    # Line 1 is the separator, so problems of the whole conversation point there.
    ("2026-03-05 10:00:00 小明: 在吗\n2026-03-05 10:00:05 小红: 在的\n", 1, "speaker",
     "no speaker is recognised as the shop (speakers: 小明, 小红)"),
    ("聊天记录导出\n2026-03-05 10:00:00 店:阿福: 在的\n", 2, None, "text before the first message header"),
    ("2026-03-05 10:00:00 店:阿福: 在的\n2026-02-30 10:01:00 小明: 好\n", 3, "time",
     "bad timestamp '2026-02-30"),
    ("2026-03-05 10:00:00 店:阿福: \n\n", 1, None, "every message has empty text"),
])
def test_chatlog_rejects(tmp_path: Path, log: str, line: int, field: str | None, reason_part: str) -> None:
    transcripts, rejects = read_one(tmp_path / "log.txt", "# conversation: x\n" + log)

    assert transcripts == []
    [reject] = rejects
    assert (reject.transcript_id, reject.line, reject.field) == ("x", line, field)
    assert reason_part in reject.reason


@pytest.mark.parametrize(("encoding", "newline"), [("gbk", "\n"), ("utf-8", "\r\n"), ("utf-8-sig", "\r\n")])
def test_a_chatlog_in_gbk_or_with_windows_line_ends_reads_the_same(
    tmp_path: Path, encoding: str, newline: str
) -> None:
    expected, _ = read_one(tmp_path / "plain.txt", CHATLOG)
    transcripts, rejects = read_one(tmp_path / "log.txt", CHATLOG.replace("\n", newline).encode(encoding))

    assert rejects == []
    assert [t.turns for t in transcripts] == [t.turns for t in expected]


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-03-02 10:15:03", datetime(2026, 3, 2, 10, 15, 3, tzinfo=SHANGHAI)),
    ("2026/03/02 10:15:03", datetime(2026, 3, 2, 10, 15, 3, tzinfo=SHANGHAI)),
    ("2026-3-2 9:05", datetime(2026, 3, 2, 9, 5, tzinfo=SHANGHAI)),
    ("2026-03-02T10:15:03.250", datetime(2026, 3, 2, 10, 15, 3, 250000, tzinfo=SHANGHAI)),
    ("2026-03-02T02:15:03Z", datetime(2026, 3, 2, 2, 15, 3, tzinfo=UTC)),
    ("2026-03-02T10:15:03+09:00", datetime(2026, 3, 2, 10, 15, 3, tzinfo=timezone(timedelta(hours=9)))),
    # 1772417703 s since 1970 = 2026-03-02 02:15:03 UTC (20514 days + 8103 s).
    (1772417703, datetime(2026, 3, 2, 2, 15, 3, tzinfo=UTC)),
    (1772417703250, datetime(2026, 3, 2, 2, 15, 3, 250000, tzinfo=UTC)),
    ("1772417703", datetime(2026, 3, 2, 2, 15, 3, tzinfo=UTC)),
    (1772417703.5, datetime(2026, 3, 2, 2, 15, 3, 500000, tzinfo=UTC)),
])
def test_parse_time_reads_every_documented_form_as_an_aware_time(
    value: str | int | float, expected: datetime
) -> None:
    parsed = parse_time(value)

    assert parsed == expected and parsed.tzinfo is not None


def test_explicit_offsets_are_kept_and_naive_times_get_the_default_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")

    assert parse_time("2026-03-02 10:15:03", berlin).utcoffset() == timedelta(hours=1)
    assert parse_time("2026-07-02 10:15:03", berlin).utcoffset() == timedelta(hours=2)  # summer time
    assert parse_time("2026-03-02 10:15:03+08:00", berlin).utcoffset() == timedelta(hours=8)
    assert parse_time(1772417703, berlin).tzinfo is berlin


def test_the_reader_passes_default_tz_on(tmp_path: Path) -> None:
    line = conv("x", ("customer", "hi")).replace('"hi"', '"hi", "time": "2026-03-02 10:15:03"')
    [t], _ = read_one(tmp_path / "a.jsonl", line + "\n", default_tz=UTC)

    assert t.turns[0].time == datetime(2026, 3, 2, 10, 15, 3, tzinfo=UTC)


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01 10:00:00", "", 0, "1999-12-31 23:59:59", True])
def test_parse_time_rejects_with_the_value_quoted(value: str | int) -> None:
    with pytest.raises(ValueError, match="bad timestamp"):
        parse_time(value)


# --- tokens and rejects file ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "tokens"), [
    ("", 0),
    ("你好，世界", 5),  # 5 non-ASCII characters (the full-width comma counts), 1 each
    ("hello world", 4),  # 11 ASCII characters / 3 = 3.67, rounded up
    ("退货 refund", 5),  # 2 CJK + ceil(7 ASCII / 3) = 2 + 3
    ("亲😊", 2),  # an emoji counts like a CJK character
])
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_write_rejects_appends_readable_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "rejects.jsonl"
    first = Reject(file="a.csv", line=3, transcript_id="c1", field="role", reason="unknown role '坐席'")
    second = Reject(file="b.txt", reason="文件为空")

    assert write_rejects([first], out) == 1
    assert write_rejects(iter([second]), out) == 1

    lines = out.read_text(encoding="utf-8").splitlines()
    assert "坐席" in lines[0]  # not \u escaped
    assert [Reject.model_validate_json(line) for line in lines] == [first, second]


# --- the example files ---------------------------------------------------------------------------


def test_every_example_format_file_reads_without_rejects() -> None:
    files = sorted(FORMATS_DIR.iterdir())
    transcripts, rejects = split(read_transcripts(files))

    assert rejects == []
    assert {Path(t.source or "").name.split(":")[0] for t in transcripts} == {f.name for f in files}
    assert all(t.turns[0].time is not None for t in transcripts)
    assert (FORMATS_DIR / "example_gbk.csv").read_bytes().decode("gbk")  # really GBK bytes …
    with pytest.raises(UnicodeDecodeError):
        (FORMATS_DIR / "example_gbk.csv").read_bytes().decode("utf-8")  # … and not UTF-8


# --- satisfaction ratings (满意度) ----------------------------------------------------------------


def test_satisfaction_ratings_are_read_from_jsonl_and_csv(tmp_path: Path) -> None:
    content = "\n".join([conv("a", ("customer", "在吗"), satisfaction=5), conv("b", ("customer", "在吗"),
                         satisfaction="4"), conv("c", ("customer", "在吗")), conv("d", ("customer", "x"),
                         satisfaction=6), conv("e", ("customer", "x"), satisfaction="好评")]) + "\n"
    transcripts, rejects = read_one(tmp_path / "a.jsonl", content)
    assert [(t.id, t.satisfaction) for t in transcripts] == [("a", 5), ("b", 4), ("c", None)]
    assert [(r.transcript_id, r.line, r.field) for r in rejects] == [("d", 4, "satisfaction"),
                                                                     ("e", 5, "satisfaction")]
    assert "1 to 5" in rejects[0].reason
    csv_text = "conversation_id,role,text,satisfaction\nc1,customer,hi,\nc1,agent,您好,3\nc2,customer,hi,0\n"
    transcripts, rejects = read_one(tmp_path / "b.csv", csv_text)
    assert [(t.id, t.satisfaction) for t in transcripts] == [("c1", 3)]
    assert [(r.transcript_id, r.field) for r in rejects] == [("c2", "satisfaction")]
