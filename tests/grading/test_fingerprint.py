"""The judge fingerprint: recorded by a check, enforced by `kefu grade --checked-by`, reported by `--compare`."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner, Result

from pipeline.cli.main import app
from pipeline.grading.fingerprint import JudgeFingerprint, endpoint_name, fingerprint_differences
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]
DCH1 = REPO / "rubric" / "dch1_quality.yaml"


def test_endpoint_names_keep_no_credentials() -> None:
    assert endpoint_name("https://user:sk-secret@api.example.com:8443/v1/?key=sk-x#f", local=False) == (
        "https://api.example.com:8443/v1")
    assert endpoint_name(None, local=False) == "https://api.openai.com/v1"
    assert endpoint_name("http://127.0.0.1:5123/v1", local=True) == "embedded local model"


def test_differences_name_each_part() -> None:
    a = JudgeFingerprint(model="m1", endpoint="e", rubric_hash="r" * 64, template_hash="t" * 64, temperature=0.0,
                         seed=None, max_tokens=4096)
    assert fingerprint_differences(a, a) == []
    b = a.model_copy(update={"model": "m2", "template_hash": "u" * 64, "temperature": 0.7})
    assert fingerprint_differences(a, b) == ["模型：m1 → m2", "提示词模板：tttttttttttt → uuuuuuuuuuuu",
                                             "temperature：0.0 → 0.7"]


def _write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    chats = [Transcript(id=f"c{i}", turns=[Turn(role=Role.customer, text=f"订单{i}到哪了？", time=t0),
                                           Turn(role=Role.agent, text="亲，已发货", time=t0 + timedelta(seconds=9))])
             for i in range(4)]
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(c.model_dump_json(exclude_none=True) for c in chats) + "\n", encoding="utf-8")
    labels = tmp_path / "labels.csv"
    with labels.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["transcript_id", "criterion_id", "score", "rater_id"])
        w.writerows([f"c{i}", c, i % 5, "qa1"] for i in range(4)
                    for c in ("accomplishment", "satisfaction", "efficiency"))
    return src, labels


def test_a_check_vouches_for_its_judge_only(tmp_path: Path) -> None:
    src, labels = _write_inputs(tmp_path)
    runner = CliRunner()
    with MockServer() as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-secret-99"}
        common = [str(src), "--rubric", str(DCH1), "--resamples", "20", "--labels", str(labels), "--repeats", "1"]
        checked = runner.invoke(app, ["check", *common, "--out", str(tmp_path / "check"), "--model", "judge-a"],
                                env=env)
        assert checked.exit_code == 0, checked.output
        judge = json.loads((tmp_path / "check" / "agreement.json").read_text(encoding="utf-8"))["judge"]
        assert judge["model"] == "judge-a" and judge["endpoint"] == server.base_url.rstrip("/")
        assert "sk-test" not in json.dumps(judge)

        def grade(*extra: str) -> Result:
            return runner.invoke(app, ["grade", str(src), "--rubric", str(DCH1), "--out", str(tmp_path / "run"),
                                       "--checked-by", str(tmp_path / "check"), *extra], env=env)

        server.reset()
        other = grade("--model", "judge-b", "--temperature", "0.5")
        assert other.exit_code == 2
        said = "".join(other.output.split())  # the console wraps long lines
        assert "模型：judge-a→judge-b" in said and "temperature：0.0→0.5" in said
        assert server.requests == []  # refused before any request
        same = grade("--model", "judge-a")
        assert same.exit_code == 0, same.output
        summary = runner.invoke(app, ["summary", str(tmp_path / "run")])
        assert f"评判模型经检查{tmp_path / 'check'}验证" in "".join(summary.output.split())
        rechecked = runner.invoke(app, ["check", *common, "--out", str(tmp_path / "check2"), "--model", "judge-b"],
                                  env=env)
        assert rechecked.exit_code == 0, rechecked.output
    compared = runner.invoke(app, ["report", str(tmp_path / "check2"), "--compare",
                                   str(tmp_path / "check" / "agreement.json")])
    assert compared.exit_code == 0, compared.output
    md = (tmp_path / "check2" / "agreement.md").read_text(encoding="utf-8")
    assert "评判模型已变更" in md and "模型：judge-a → judge-b" in md


def test_a_check_without_a_fingerprint_is_refused_and_says_how_to_make_one(tmp_path: Path) -> None:
    # A check made before fingerprints were recorded: its agreement.json is today's without the "judge" key
    # (checked against one written by the code of d81a25e^: the same keys but that one).
    src, labels = _write_inputs(tmp_path)
    runner = CliRunner()
    check = [str(src), "--rubric", str(DCH1), "--resamples", "20", "--labels", str(labels), "--repeats", "1",
             "--out", str(tmp_path / "check"), "--model", "judge-a"]
    with MockServer() as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        assert runner.invoke(app, ["check", *check], env=env).exit_code == 0
        path = tmp_path / "check" / "agreement.json"
        old = json.loads(path.read_text(encoding="utf-8"))
        del old["judge"], old["criteria"][0]["baselines"]  # an older layout fails validation too: still this reason
        path.write_text(json.dumps(old), encoding="utf-8")

        def grade() -> Result:
            return runner.invoke(app, ["grade", str(src), "--rubric", str(DCH1), "--out", str(tmp_path / "run"),
                                       "--checked-by", str(tmp_path / "check"), "--model", "judge-a"], env=env)

        server.reset()
        refused = grade()
        assert refused.exit_code == 2
        said = "".join(refused.output.split())
        assert "没有记录评判模型指纹" in said and "重新运行kefucheck" in said and "--checked-by" in said
        assert server.requests == []
        # Doing what it says makes one: the rerun reuses the stored grades, and the check then vouches.
        assert runner.invoke(app, ["check", *check], env=env).exit_code == 0
        assert server.requests == []
        assert grade().exit_code == 0
    not_a_check = runner.invoke(app, ["grade", str(src), "--rubric", str(DCH1), "--out", str(tmp_path / "run2"),
                                      "--checked-by", str(tmp_path)], env={"OPENAI_API_KEY": "sk-test"})
    assert not_a_check.exit_code == 2 and "不是检查文件夹" in "".join(not_a_check.output.split())
