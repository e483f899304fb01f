"""Per-group judge-only, PPI and labelled-only means of a run, the sample warning, and `kefu sample` / `kefu summary
--labels` end to end against the loopback server."""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.agreement.ppi import Stratum, classical_mean, ppi_mean, stratified_mean
from pipeline.cli.main import app
from pipeline.inputs.labels import Label, LabelSet
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.outputs.estimates import estimate_means, sample_warning
from pipeline.outputs.exports import ScoreRow
from pipeline.rubric.load import load_rubric
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]
DCH1 = REPO / "rubric" / "dch1_quality.yaml"
CRITERIA = ("accomplishment", "satisfaction", "efficiency")


def test_three_means_per_group_and_item() -> None:
    rubric = load_rubric(DCH1)
    judge = {"t0": 4, "t1": 3, "t2": 2, "t3": 4, "t4": 1, "t5": 2}
    rows = [ScoreRow(transcript_id=t, repeat=r, scores=dict.fromkeys(CRITERIA, s), model="m", status="ok")
            for t, s in judge.items() for r in (0, 1)]
    groups = {t: ("a" if t < "t3" else "b") for t in judge}
    # t0..t3 labelled by two raters; a chat's human score is their mean (accomplishment: 3.5, 2.5, 1.5, 3.5).
    labels = LabelSet(labels=[Label(transcript_id=t, criterion_id=c, score=s - d, rater_id=r)
                              for t, s in list(judge.items())[:4] for c in CRITERIA
                              for r, d in (("x", 0), ("y", 1))])
    result = estimate_means(rows, rubric, labels, groups, "agent", sample=["t0", "t1", "t2", "t3"])
    assert result.labelled == 4 and result.random_sample and result.warning is None
    by = {(m.group, m.item): m for m in result.means}
    assert set(by) == {(g, i) for g in ("*", "a", "b") for i in ("total", *CRITERIA)}
    everything = by[("*", "accomplishment")]
    assert everything.chats == 6 and everything.judge_only == classical_mean(list(judge.values()),
                                                                              method="judge only")
    assert everything.ppi == ppi_mean([3.5, 2.5, 1.5, 3.5], [4, 3, 2, 4], [1, 2])
    assert everything.labelled_only.estimate == pytest.approx(11 / 4)
    # The total is the sum of the criteria on both sides: the human totals are 3 × 3.5, 3 × 2.5, …
    assert by[("*", "total")].labelled_only.estimate == pytest.approx(3 * 11 / 4)
    # Group a has every chat labelled: no unlabelled chat, so PPI is undefined; group b has one labelled chat.
    assert math.isnan(by[("a", "total")].ppi.estimate) and by[("b", "total")].ppi.n_labelled == 1


def test_a_stratified_sample_weights_its_strata_in_every_row() -> None:
    # Stratum a: 8 chats, 2 labelled; stratum b: 4 chats, 3 labelled. The judge scores 4 in a and 1 in b and
    # is one point high in a, exact in b, so pooling the labelled chats as one sample (a rectifier of −2/5
    # where the run's is −8/12) is off, and the stratified row is each stratum's estimate, weighted 8/12, 4/12.
    rubric = load_rubric(DCH1)
    judge = {f"a{i}": 4 for i in range(8)} | {f"b{i}": 1 for i in range(4)}
    rows = [ScoreRow(transcript_id=t, repeat=0, scores=dict.fromkeys(CRITERIA, s), model="m", status="ok")
            for t, s in judge.items()]
    strata = {t: t[0] for t in judge}
    sampled = ["a0", "a1", "b0", "b1", "b2"]
    labels = LabelSet(labels=[Label(transcript_id=t, criterion_id=c, score=judge[t] - (t[0] == "a") * (1 + i % 2),
                                    rater_id="x") for i, t in enumerate(sampled) for c in CRITERIA])
    by_team = dict.fromkeys(judge, "team")
    plain = estimate_means(rows, rubric, labels, by_team, "shop", sample=sampled)
    weighted = estimate_means(rows, rubric, labels, by_team, "shop", sample=sampled, strata=strata,
                              stratified_by="agent")
    assert plain.stratified_by is None and weighted.stratified_by == "agent"
    row = {(m.group, m.item): m for m in weighted.means}[("*", "accomplishment")]
    human = {t: judge[t] - (t[0] == "a") * (1 + i % 2) for i, t in enumerate(sampled)}
    a = Stratum([human["a0"], human["a1"]], [4, 4], [4] * 6)
    b = Stratum([human[t] for t in ("b0", "b1", "b2")], [1, 1, 1], [1])
    # b has one unlabelled chat, too few for its own PPI interval: pooled, and that pool into a, the larger.
    assert row.ppi == stratified_mean([a, b], method="ppi")
    assert row.labelled_only == stratified_mean([a, b], method="labelled only")
    # Labelled only, by hand: a's labels 3, 2 (mean 2.5) and b's 1, 1, 1 (mean 1) weighted 8/12, 4/12 = 2.
    assert row.labelled_only.estimate == pytest.approx(2.0) and row.labelled_only.strata == 2
    pooled = {(m.group, m.item): m for m in plain.means}[("*", "accomplishment")]
    assert pooled.labelled_only.estimate == pytest.approx((3 + 2 + 1 + 1 + 1) / 5)  # 1.6: b over-represented


def test_the_sample_warning() -> None:
    assert sample_warning({"a"}, None) is not None and "随机" in (sample_warning({"a"}, None) or "")
    assert "1 条已标注的对话不在抽样清单中" in (sample_warning({"a", "b"}, {"a", "c"}) or "")
    assert "1 条对话未标注" in (sample_warning({"a"}, {"a", "c"}) or "")
    assert sample_warning({"a", "c"}, {"a", "c"}) is None


def _chats(n: int) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return [Transcript(id=f"c{i:03d}", agent_id=f"kf-{i % 2}", turns=[
        Turn(role=Role.customer, text=f"订单{i}什么时候发货？", time=t0 + timedelta(minutes=i)),
        Turn(role=Role.agent, text="亲，48小时内发货哦", time=t0 + timedelta(minutes=i, seconds=5)),
    ]) for i in range(n)]


def test_sample_then_summary_with_labels(tmp_path: Path) -> None:
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(c.model_dump_json(exclude_none=True) for c in _chats(20)) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    with MockServer() as server:
        env = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        graded = runner.invoke(app, ["grade", str(src), "--out", str(out), "--rubric", str(DCH1),
                                     "--model", "mock-model"], env=env)
        assert graded.exit_code == 0, graded.output
        requests = len(server.requests)
    sample = tmp_path / "sample_ids.txt"
    drawn = runner.invoke(app, ["sample", str(out), "--n", "8", "--seed", "3", "--by", "agent", "--to", str(sample)])
    assert drawn.exit_code == 0, drawn.output
    text = sample.read_text(encoding="utf-8")
    assert text.startswith("# kefu sample: strata=agent seed=3\n")  # what the sample was stratified by
    ids = text.split("\n", 1)[1].split()
    assert len(ids) == 8 and sum(int(t[1:]) % 2 for t in ids) == 4  # 4 chats of each agent
    # Labels: the judge's own repeat-0 scores minus one where it can, for the sampled chats.
    scores = {r["transcript_id"]: r for r in csv.DictReader((out / "scores.csv").open(encoding="utf-8-sig"))
              if r["repeat"] == "0"}
    labels = tmp_path / "labels.csv"
    with labels.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["transcript_id", "criterion_id", "score", "rater_id"])
        w.writerows([t, c, max(int(scores[t][c]) - 1, 0), "qa1"] for t in ids for c in CRITERIA)
    summary = runner.invoke(app, ["summary", str(out), "--labels", str(labels), "--sample-ids", str(sample)])
    assert summary.exit_code == 0, summary.output
    assert "PPI" in summary.output and "注意" not in summary.output
    assert "抽样按agent分层" in "".join(summary.output.split())
    frame = pd.read_csv(out / "means_by_agent.csv", encoding="utf-8-sig")
    row = frame[(frame["agent"] == "kf-0") & (frame["item"] == "total")].iloc[0]
    assert row["chats"] == 10 and row["labelled"] == 4
    assert row["labelled_mean"] <= row["judge_mean"]  # the labels are the judge's scores, lowered
    unsampled = runner.invoke(app, ["summary", str(out), "--labels", str(labels)])
    assert unsampled.exit_code == 0 and "注意" in unsampled.output and "随机" in unsampled.output
    assert requests == len(server.requests)  # summary and sample send nothing
