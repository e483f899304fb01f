"""The verdict on real people: DCH-1's human labels (internal evaluation data, never in the repository).

Skipped when the dataset is not beside the checkout (shared/datasets/dch1_stc3 in a parent folder, or
$KEFU_DCH1). On 120 dev dialogues: a strong annotator served as the judge is trusted on accomplishment, and
the uninformative judges are not trusted and fail the alt-test although they win its per-chat scoring.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from bench.dch1_agreement import DATASET, judge_rows, label_rows
from pipeline.agreement.baselines import constant_judge
from pipeline.consistency.assess import assess
from pipeline.consistency.results import CheckOptions, CheckResult, CriterionCheck
from pipeline.inputs.labels import Label, LabelSet
from pipeline.rubric.load import load_rubric

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (DATASET / "train_data_cn.json").is_file(),
                                reason="DCH-1 (shared/datasets/dch1_stc3) is not beside this checkout")


@pytest.fixture(scope="module")
def dev_labels() -> LabelSet:
    data = json.loads((DATASET / "train_data_cn.json").read_text(encoding="utf-8"))
    dev = sorted((DATASET / "dev_ids.txt").read_text(encoding="utf-8").split())
    ids = set(random.Random(0).sample(dev, 120))
    return LabelSet(labels=[Label(transcript_id=t, criterion_id=c, score=s, rater_id=r)
                            for d in data if str(d["id"]) in ids for t, c, s, r in label_rows(d)])


def _result(labels: LabelSet, judge: dict[str, int]) -> CheckResult:
    scores = {t: {0: {"accomplishment": s, "satisfaction": s, "efficiency": s}} for t, s in judge.items()}
    result, _ = assess(load_rubric(REPO / "rubric/dch1_quality.yaml"), labels, scores,
                       options=CheckOptions(n_resamples=200), repeats=1, model="m", rubric_path="r")
    return result


def _check(labels: LabelSet, judge: dict[str, int]) -> CriterionCheck:
    return _result(labels, judge).criteria[0]


def test_a_strong_annotator_as_the_judge_is_trusted(dev_labels: LabelSet) -> None:
    # a15 has the highest κw against the others on every score of the dev ids (bench/README.md).
    judge = {x.transcript_id: x.score for x in dev_labels.labels
             if x.rater_id == "a15" and x.criterion_id == "accomplishment"}
    others = LabelSet(labels=[x for x in dev_labels.labels if x.rater_id != "a15"])
    c = _check(others, judge)
    assert c.verdict == "trusted" and c.alt_test is not None and c.alt_test.passed


def test_the_constant_judge_on_real_labels(dev_labels: LabelSet) -> None:
    units, _, m = dev_labels.matrix("accomplishment")
    judge = dict(zip(units, constant_judge(m, [0, 1, 2, 3, 4]).astype(int).tolist(), strict=True))
    c = _check(dev_labels, judge)
    assert c.verdict == "not trusted" and c.alt_test is not None and not c.alt_test.passed
    assert c.alt_test.winning_rate >= 0.5 and np.isnan(c.alt_test.discrimination)


def test_the_bench_table_sets_the_judge_beside_the_baselines_and_one_rater(dev_labels: LabelSet) -> None:
    judge = {x.transcript_id: x.score for x in dev_labels.labels
             if x.rater_id == "a15" and x.criterion_id == "accomplishment"}
    result = _result(LabelSet(labels=[x for x in dev_labels.labels if x.rater_id != "a15"]), judge)
    rows = judge_rows(result)
    assert [(r.criterion, r.who) for r in rows[:4]] == [
        ("accomplishment", "judge"), ("accomplishment", "constant"), ("accomplishment", "prior"),
        ("accomplishment", "one rater")]
    c = result.criteria[0]
    assert c.verdict_detail is not None and c.verdict_detail.typical_rater is not None
    judge_row, constant, _, rater = rows[:4]
    # the judge's cells are estimate [low, high]; the rater line's κw median is the verdict's typical rater
    kappa = c.judge_vs_human.metrics.weighted_kappa
    assert judge_row.weighted_kappa == f"{kappa.estimate:.2f} [{kappa.low:.2f}, {kappa.high:.2f}]"
    assert rater.weighted_kappa.startswith(f"{c.verdict_detail.typical_rater:.2f} (")
    assert constant.spearman == "—"  # a constant has no ranking
