"""The inputs that used to stop a run, each now one reject line, and the limits behind them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.inputs.limits import (
    MAX_ID_CHARS,
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    id_problem,
    json_too_deep,
    label_problem,
)
from pipeline.inputs.transcripts import read_transcripts
from pipeline.models.transcript import Reject, Transcript
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]


def chat(conv_id: Any, text: str = "在吗", **fields: Any) -> dict[str, Any]:
    return {"id": conv_id, "turns": [{"role": "customer", "text": text, "time": "2026-03-02 10:00:00"},
                                     {"role": "agent", "text": "亲，您好", "time": "2026-03-02 10:00:05"}],
            **fields}


def line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


GOOD = [chat(f"good-{i}") for i in range(3)]


def write_bad_folder(folder: Path) -> dict[str, tuple[int | None, str | None]]:
    """A folder of good chats and every kind of input that once stopped a run; returns, per bad file name,
    the (line, field) its reject must name."""
    folder.mkdir()
    (folder / "a_good.jsonl").write_text(line(GOOD[0]) + "\n" + line(GOOD[1]) + "\n", encoding="utf-8")
    (folder / "b_utf16.jsonl").write_bytes((line(chat("u16")) + "\n").encode("utf-16"))
    (folder / "c_nul.jsonl").write_bytes(line(chat("nul")).encode() + b"\x00\n")
    (folder / "d_binary.jsonl").write_bytes(b"\x80\xff\xfe\x81\n" * 5)
    (folder / "d_binary_nul.jsonl").write_bytes(bytes(range(256)) * 4)
    (folder / "e_surrogate_text.jsonl").write_text(
        json.dumps(chat("sur", "hi \ud800")) + "\n" + line(GOOD[2]) + "\n", encoding="utf-8")
    (folder / "f_surrogate_id.jsonl").write_text(json.dumps(chat("\udc00x")) + "\n", encoding="utf-8")
    (folder / "g_long_int_id.jsonl").write_text(line(chat(0)).replace("0", "9" * 5000, 1) + "\n", encoding="utf-8")
    (folder / "h_deep.jsonl").write_text(line(chat("deep", x=0)).replace(
        "0}", "[" * 100_000 + "]" * 100_000 + "}") + "\n", encoding="utf-8")
    (folder / "i_control_in_id.csv").write_text(
        "conversation_id,role,text\n\"c\x01\",customer,在吗\n\"c\x01\",agent,亲\n", encoding="utf-8")
    (folder / "j_dangling.jsonl").symlink_to(folder / "missing.jsonl")
    (folder / "k_loop.jsonl").symlink_to(folder / "k_loop.jsonl")
    os.mkfifo(folder / "l_fifo.jsonl")
    (folder / "m_deep").mkdir()
    _deep_folder(folder / "m_deep")
    return {"d" * 200: (None, None), "b_utf16.jsonl": (1, None), "c_nul.jsonl": (1, None), "d_binary.jsonl": (1, None),
            "d_binary_nul.jsonl": (1, None), "e_surrogate_text.jsonl": (1, "turns[0].text"),
            "f_surrogate_id.jsonl": (1, "id"), "g_long_int_id.jsonl": (1, None), "h_deep.jsonl": (1, None),
            "i_control_in_id.csv": (2, "conversation_id"), "j_dangling.jsonl": (None, None),
            "k_loop.jsonl": (None, None), "l_fifo.jsonl": (None, None)}


def test_every_kind_of_bad_input_is_one_reject_and_the_good_chats_are_read(tmp_path: Path) -> None:
    expected = write_bad_folder(tmp_path / "in")
    items = list(read_transcripts([tmp_path / "in"]))
    assert sorted(item.id for item in items if isinstance(item, Transcript)) == [c["id"] for c in GOOD]
    rejects = {Path(item.file).name: item for item in items if isinstance(item, Reject)}
    assert len(rejects) == len(items) - len(GOOD) == len(expected)
    assert {name: (r.line, r.field) for name, r in rejects.items()} == expected
    assert "UTF-16" in rejects["b_utf16.jsonl"].reason
    assert "lone surrogate \\ud800 at character 4" in rejects["e_surrogate_text.jsonl"].reason
    assert rejects["e_surrogate_text.jsonl"].transcript_id == "sur"
    assert rejects["f_surrogate_id.jsonl"].transcript_id is None  # it cannot be written
    assert rejects["i_control_in_id.csv"].transcript_id == "c\x01"
    assert "more than 4,300 digits" in rejects["g_long_int_id.jsonl"].reason
    assert f"more than {MAX_JSON_DEPTH} levels" in rejects["h_deep.jsonl"].reason
    assert "which does not exist" in rejects["j_dangling.jsonl"].reason
    assert "loops back" in rejects["k_loop.jsonl"].reason
    assert "FIFO" in rejects["l_fifo.jsonl"].reason
    assert "无法读取这个文件夹" in rejects["d" * 200].reason


@pytest.mark.parametrize(("name", "good"), [("a.jsonl", line(GOOD[0])), ("a.csv", "c,customer,在吗\nc,agent,亲"),
                                           ("a.txt", "----- 会话 c2 -----\n2026-03-02 10:15:03 小明: 在吗\n"
                                                     "2026-03-02 10:15:09 店:美: 亲")])
def test_a_line_over_the_size_limit_is_one_reject_and_the_rest_is_read(tmp_path: Path, name: str, good: str) -> None:
    header = "conversation_id,role,text\n" if name.endswith(".csv") else ""
    huge = "x" * MAX_LINE_BYTES  # with its line break, one byte over
    (tmp_path / name).write_text(f"{header}{huge}\n{good}\n", encoding="utf-8")
    first, second = read_transcripts([tmp_path / name])
    assert isinstance(first, Reject) and first.reason == f"line {1 + bool(header)} is longer than 16 MiB: not read"
    assert isinstance(second, Transcript)


def test_a_blank_time_is_not_measurable_in_jsonl_as_in_csv(tmp_path: Path) -> None:
    turns = [{"role": "customer", "text": "在吗", "time": ""}, {"role": "agent", "text": "亲", "time": " "}]
    (tmp_path / "a.jsonl").write_text(line({"id": "j", "turns": turns}) + "\n", encoding="utf-8")
    (tmp_path / "b.csv").write_text("conversation_id,role,text,time\nc,customer,在吗,\nc,agent,亲, \n",
                                    encoding="utf-8")
    items = list(read_transcripts([tmp_path / "a.jsonl", tmp_path / "b.csv"]))
    assert all(isinstance(item, Transcript) for item in items)
    assert [[turn.time for turn in item.turns] for item in items] == [[None, None], [None, None]]


def test_json_reasons_read_cleanly(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"id": "c", "text": "a\x01b"}\n{"id": "c2", "x": "no end', encoding="utf-8")
    reasons = [item.reason for item in read_transcripts([tmp_path / "a.jsonl"]) if isinstance(item, Reject)]
    assert reasons == ["not valid JSON: Invalid control character at column 23",
                       "not valid JSON: Unterminated string starting at column 19"]


def test_a_key_twice_in_one_object_is_a_reject_not_a_lost_value(tmp_path: Path) -> None:
    """Python's parser keeps the last of two equal keys: the first turns, or a turn's first text, vanished."""
    twice_turns = line(chat("t")).replace('"turns"', '"turns": [], "turns"', 1)
    twice_text = line(chat("x")).replace('"text": "在吗"', '"text": "在吗", "text": "好的"', 1)
    (tmp_path / "a.jsonl").write_text(f"{twice_turns}\n{twice_text}\n{line(GOOD[0])}\n", encoding="utf-8")
    first, second, third = read_transcripts([tmp_path / "a.jsonl"])
    assert isinstance(first, Reject) and first.line == 1
    assert first.reason == "the key 'turns' appears twice in one object: one of its values would be lost"
    assert isinstance(second, Reject) and second.line == 2 and "'text' appears twice" in second.reason
    assert isinstance(third, Transcript) and third.id == "good-0"


def test_a_one_line_array_first_is_one_bad_line_and_the_rest_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('["x"]\n' + line(GOOD[0]) + "\n", encoding="utf-8")
    first, second = read_transcripts([tmp_path / "a.jsonl"])
    assert isinstance(first, Reject) and first.line == 1 and "jq -c" in first.reason
    assert isinstance(second, Transcript)


def test_a_file_name_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    folder = tmp_path.as_posix().encode()
    name = os.fsdecode(folder + b"/\xff.jsonl")
    Path(name).write_text(line(GOOD[0]) + "\n", encoding="utf-8")
    [item] = read_transcripts([tmp_path])
    assert isinstance(item, Transcript) and item.source == f"{tmp_path}/\\xff.jsonl:1"


def test_ids_names_and_depth_have_documented_limits() -> None:
    assert id_problem("x" * MAX_ID_CHARS) is None
    assert id_problem("x" * (MAX_ID_CHARS + 1)) == "the id is 257 characters long; at most 256 are accepted"
    assert id_problem("a\u2028b") == "the id contains the control character '\\u2028' (U+2028)"
    assert label_problem("店铺:小美 ☺ =1") is None and label_problem("a\x85") is not None
    at_limit = "[" * (MAX_JSON_DEPTH - 1) + ",".join(["{}"] * 100) + "]" * (MAX_JSON_DEPTH - 1)
    assert not json_too_deep(at_limit)
    assert json_too_deep("[" + at_limit + "]") and json_too_deep("[" * 100_000)
    assert not json_too_deep(json.dumps({"s": "[" * 1000}))  # brackets inside strings do not count


@given(depth=st.integers(0, 3 * MAX_JSON_DEPTH), inner=st.sampled_from(["[]", "{}", '"]]"', "1"]))
def test_the_depth_check_matches_the_real_nesting(depth: int, inner: str) -> None:
    text = "".join(["[", '{"k":'][i % 2] for i in range(depth)) + inner + "".join(
        ["]", "}"][i % 2] for i in reversed(range(depth)))
    json.loads(text)
    assert json_too_deep(text) == (depth + inner.count("[") + inner.count("{") > MAX_JSON_DEPTH)


def grade(folder: Path, out: Path, server: MockServer) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_"))}
    env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "pipeline", "grade", str(folder), "--out", str(out),
                           "--model", "mock-model"], env=env, cwd=REPO, text=True, capture_output=True,
                          timeout=300, check=False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_kefu_grade_finishes_a_folder_of_bad_inputs_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    expected = write_bad_folder(tmp_path / "in")
    out = tmp_path / "out"
    with MockServer() as server:
        first = grade(tmp_path / "in", out, server)
        sent_first = len(server.requests)
        server.reset()
        again = grade(tmp_path / "in", out, server)
        sent_again = len(server.requests)
    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    assert (sent_first, sent_again) == (len(GOOD), 0)
    scores = (out / "scores.csv").read_text(encoding="utf-8-sig").splitlines()[1:]
    assert sorted(row.split(",")[0] for row in scores) == [c["id"] for c in GOOD]
    rejects = [json.loads(row) for row in (out / "rejects.jsonl").read_text(encoding="utf-8").split("\n") if row]
    first_run = {Path(r["file"]).name: (r["line"], r["field"]) for r in rejects[:len(expected)]}
    assert first_run == expected


def test_chat_log_lines_built_to_make_a_pattern_backtrack_are_read(tmp_path: Path) -> None:
    """Each of these lines once took minutes to hours to match (a lazy name or id beside optional spaces or
    dashes); they are now read in time linear in their length."""
    lines = ["# 会话 x" + "-" * 200_000 + "y", "a" + " " * 50_000 + ")", "a" + "\u3000" * 50_000 + "x1",
             "----- 会话 c2 -----", "2026-03-02 10:15:03 小明: 在吗", "2026-03-02 10:15:09 店:美: 亲"]
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    first, second = read_transcripts([tmp_path / "a.txt"])
    assert isinstance(first, Reject) and first.line == 1 and "at most 256 are accepted" in first.reason
    assert isinstance(second, Transcript) and second.id == "c2"


def _deep_folder(top: Path) -> Path:
    """Nested folders down to the first whose path is longer than the system accepts (PATH_MAX, 4096 bytes with
    its NUL on Linux), made through folder handles, as only they reach so deep; returns that folder. Listing
    it fails even for root."""
    fd, deepest = os.open(top, os.O_RDONLY), top
    try:
        while len(os.fsencode(deepest)) < 4096:
            os.mkdir("d" * 200, dir_fd=fd)
            inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, deepest = inner, deepest / ("d" * 200)
        with os.fdopen(os.open("lost.jsonl", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w", encoding="utf-8") as fh:
            fh.write(line(chat("lost")) + "\n")
    finally:
        os.close(fd)
    return deepest


def test_a_sub_folder_too_deep_to_list_is_one_reject_and_the_rest_is_read(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(line(GOOD[0]) + "\n", encoding="utf-8")
    deepest = _deep_folder(tmp_path / "in")
    items = list(read_transcripts([tmp_path / "in"]))
    assert [item.id for item in items if isinstance(item, Transcript)] == ["good-0"]
    [reject] = [item for item in items if isinstance(item, Reject)]
    assert Path(reject.file) == deepest and (reject.line, reject.field) == (None, None)
    assert reject.reason == ("无法读取这个文件夹 (cannot list the folder)：路径太长 (the path is too long)；"
                             "其中的对话都没有读 (no chat in it was read)")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a folder whatever its mode")
def test_a_sub_folder_without_permission_is_one_reject_and_the_rest_is_read(tmp_path: Path) -> None:
    (tmp_path / "in" / "locked").mkdir(parents=True)
    (tmp_path / "in" / "locked" / "b.jsonl").write_text(line(GOOD[1]) + "\n", encoding="utf-8")
    (tmp_path / "in" / "a.jsonl").write_text(line(GOOD[0]) + "\n", encoding="utf-8")
    (tmp_path / "in" / "locked").chmod(0)
    try:
        items = list(read_transcripts([tmp_path / "in"]))
    finally:
        (tmp_path / "in" / "locked").chmod(0o755)
    assert [item.id for item in items if isinstance(item, Transcript)] == ["good-0"]
    [reject] = [item for item in items if isinstance(item, Reject)]
    assert reject.file == str(tmp_path / "in" / "locked")
    assert reject.reason.startswith("无法读取这个文件夹 (cannot list the folder)：没有权限 (permission denied)")
    assert "Errno" not in reject.reason


def test_a_sub_folder_gone_during_the_walk_is_one_reject_and_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The folder is removed just before the walk lists it, as another program moving it away would."""
    for name, chat_ in (("a", GOOD[0]), ("b", GOOD[1]), ("c", GOOD[2])):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "x.jsonl").write_text(line(chat_) + "\n", encoding="utf-8")
    scandir = os.scandir

    def remove_b_first(path: Any) -> Any:
        if Path(path).name == "b":
            (Path(path) / "x.jsonl").unlink()
            Path(path).rmdir()
        return scandir(path)

    monkeypatch.setattr(os, "scandir", remove_b_first)
    items = list(read_transcripts([tmp_path / "in"]))
    assert [item.id for item in items if isinstance(item, Transcript)] == ["good-0", "good-2"]
    [reject] = [item for item in items if isinstance(item, Reject)]
    assert reject.file == str(tmp_path / "in" / "b")
    assert reject.reason == ("无法读取这个文件夹 (cannot list the folder)：不存在 (not found)"
                             "（读取时已被移走或删除 (moved or deleted during the walk)）；"
                             "其中的对话都没有读 (no chat in it was read)")
